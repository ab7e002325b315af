# The contact ledger (serving.ledger.url): PostgreSQL on a private IP in the cluster's VPC, TLS
# required. Its SQLAlchemy URL, password included, is kept in Secret Manager; with enable_kserve
# it is also written into the Kubernetes secret the InferenceServices read (kserve.tf).

resource "google_sql_database_instance" "ledger" {
  #checkov:skip=CKV_GCP_6:TLS is required (ENCRYPTED_ONLY) on a private IP only; client certificates would have to be minted and mounted per pod.
  #checkov:skip=CKV2_GCP_13:log_duration would log a line per ledger statement at serving rate; Query Insights records latencies instead.
  name                = "retention-ledger"
  database_version    = "POSTGRES_18"
  region              = var.region
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.db_tier
    edition           = "ENTERPRISE"
    availability_type = var.db_availability_type
    disk_autoresize   = true
    user_labels       = local.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.main.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
    }

    insights_config {
      query_insights_enabled = true
    }

    # Connection and lock logging for an audit trail of the ledger (and the CIS benchmark).
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "ledger" {
  name     = "ledger"
  instance = google_sql_database_instance.ledger.name
}

resource "random_password" "ledger" {
  length  = 32
  special = false
}

resource "google_sql_user" "ledger" {
  name     = "ledger"
  instance = google_sql_database_instance.ledger.name
  password = random_password.ledger.result
}

locals {
  ledger_url = "postgresql+psycopg://${google_sql_user.ledger.name}:${random_password.ledger.result}@${google_sql_database_instance.ledger.private_ip_address}:5432/${google_sql_database.ledger.name}?sslmode=require"
}

resource "google_secret_manager_secret" "ledger_url" {
  secret_id = "retention-ledger-url"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "ledger_url" {
  secret      = google_secret_manager_secret.ledger_url.id
  secret_data = local.ledger_url
}
