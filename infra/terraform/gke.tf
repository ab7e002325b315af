# A zonal GKE Standard cluster with private nodes and two autoscaled node pools, named as the
# profile's node selectors expect (cloud.google.com/gke-nodepool: cpu-pool | gpu-pool). The GPU
# pool's taint is the one the compiled pipeline and the writer InferenceService tolerate.

resource "google_container_cluster" "main" {
  #checkov:skip=CKV_GCP_65:RBAC through Google Groups needs a Google Workspace domain the project may not have.
  #checkov:skip=CKV_GCP_24:PodSecurityPolicy was removed from Kubernetes (1.25); GKE enforces Pod Security Admission instead.
  #checkov:skip=CKV_GCP_61:The subnet's VPC flow logs record node traffic; intranode visibility (same-node pod traffic) is left off with Dataplane V2.
  name     = var.cluster_name
  location = var.zone

  network         = google_compute_network.main.id
  subnetwork      = google_compute_subnetwork.gke.id
  networking_mode = "VPC_NATIVE"

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  # Node pools are managed below; the default pool is removed right after creation.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = var.deletion_protection

  release_channel {
    channel = "REGULAR"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false # kubectl from the authorized networks below
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # Dataplane V2 enforces NetworkPolicy itself; the older Calico add-on stays off.
  datapath_provider = "ADVANCED_DATAPATH"

  network_policy {
    enabled = false
  }

  enable_shielded_nodes = true
  enable_legacy_abac    = false

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true # scrapes the model servers' /metrics
    }
  }

  resource_labels = local.labels

  # Settings of the short-lived default pool, kept as strict as the real pools.
  node_config {
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata        = { disable-legacy-endpoints = "true" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  lifecycle {
    ignore_changes = [node_config] # only describes the removed default pool
  }

  depends_on = [google_project_service.apis]
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu-pool"
  cluster  = google_container_cluster.main.id
  location = var.zone

  initial_node_count = 1

  autoscaling {
    min_node_count = var.cpu_pool_min_nodes
    max_node_count = var.cpu_pool_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_machine_type
    image_type      = "COS_CONTAINERD"
    disk_size_gb    = 100
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    metadata        = { disable-legacy-endpoints = "true" }
    resource_labels = local.labels

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name     = "gpu-pool"
  cluster  = google_container_cluster.main.id
  location = var.zone

  # Starts empty and scales up when a pod that tolerates the GPU taint is pending.
  initial_node_count = 0

  autoscaling {
    min_node_count = var.gpu_pool_min_nodes
    max_node_count = var.gpu_pool_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_machine_type
    image_type      = "COS_CONTAINERD"
    disk_size_gb    = 200
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    metadata        = { disable-legacy-endpoints = "true" }
    resource_labels = local.labels

    guest_accelerator {
      type  = var.gpu_accelerator_type
      count = 1

      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    # Only pods that tolerate it land here (pipeline.gpu_pool.tolerations in configs/gcp.yaml).
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}
