# Three buckets, named as configs/gcp.yaml expects: input data, the Vertex AI pipeline root and
# the model store. All regional (beside Vertex AI), uniform access, no public access, versioned.

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs; legacy usage logs would need a fourth bucket that logs nowhere.
  name                        = local.data_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "pipelines" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs; legacy usage logs would need a fourth bucket that logs nowhere.
  name                        = local.pipelines_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Run artifacts are scratch: the model store keeps what passed the gates.
  lifecycle_rule {
    condition {
      age = var.pipeline_root_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "models" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs; legacy usage logs would need a fourth bucket that logs nowhere.
  name                        = local.models_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  # Releases are immutable and the production pointer is overwritten on each push: versioning
  # keeps every earlier pointer, so a rollback is a copy of an older generation.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}
