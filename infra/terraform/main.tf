locals {
  labels = merge(var.labels, { managed-by = "terraform" })

  # Names configs/gcp.yaml refers to: keep them in step (tests/test_infra.py checks).
  data_bucket      = "${var.project_id}-data"
  pipelines_bucket = "${var.project_id}-pipelines"
  models_bucket    = "${var.project_id}-models"
  docker_repo_id   = "retention"
  kfp_repo_id      = "retention-pipelines"
  bigquery_dataset = "retention"
  image_registry   = "${var.region}-docker.pkg.dev/${var.project_id}/${local.docker_repo_id}"
  template_host    = "https://${var.region}-kfp.pkg.dev/${var.project_id}/${local.kfp_repo_id}"

  services = toset([
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "binaryauthorization.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
  ])
}

# The APIs everything below needs. Left enabled on destroy: other things in the project may use them.
resource "google_project_service" "apis" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# ------------------------------------------------------------------------------------ network

resource "google_compute_network" "main" {
  name                    = "retention"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "gke" {
  name                     = "retention-gke"
  region                   = var.region
  network                  = google_compute_network.main.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true # private nodes reach GCS, Artifact Registry and Vertex AI

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Explicit lowest-priority deny for ingress (GKE adds the rules the cluster needs above it).
resource "google_compute_firewall" "deny_ingress" {
  name      = "retention-deny-all-ingress"
  network   = google_compute_network.main.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }

  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The private control plane calls admission webhooks on the nodes: GKE opens only 443 and 10250,
# KServe's webhook listens on 9443 and Knative's on 8443.
resource "google_compute_firewall" "webhooks" {
  name      = "retention-control-plane-webhooks"
  network   = google_compute_network.main.id
  direction = "INGRESS"
  priority  = 1000

  allow {
    protocol = "tcp"
    ports    = ["8443", "9443"]
  }

  source_ranges           = [var.master_ipv4_cidr_block]
  target_service_accounts = [google_service_account.gke_nodes.email]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Private nodes pull public images (KServe, cert-manager) through Cloud NAT.
resource "google_compute_router" "main" {
  name    = "retention"
  region  = var.region
  network = google_compute_network.main.id
}

resource "google_compute_router_nat" "main" {
  name                               = "retention"
  router                             = google_compute_router.main.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Cloud SQL's private IP: a range peered with Google's service network.
resource "google_compute_global_address" "private_services" {
  name          = "retention-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.main.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.main.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
  deletion_policy         = "ABANDON"
}
