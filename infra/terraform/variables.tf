variable "project_id" {
  description = "The GCP project everything is created in (gcp.project in configs/gcp.yaml)."
  type        = string
}

variable "region" {
  description = "Region of the buckets, Artifact Registry, Vertex AI and Cloud SQL (gcp.region)."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "Zone of the GKE cluster; it must offer L4 GPUs (g2 machines)."
  type        = string
  default     = "us-central1-a"
}

variable "labels" {
  description = "Labels put on every resource that takes them."
  type        = map(string)
  default     = { app = "retention" }
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset `retention` (a multi-region such as US, or a region)."
  type        = string
  default     = "US"
}

variable "deletion_protection" {
  description = "Protect the cluster and the database from `terraform destroy`."
  type        = bool
  default     = true
}

# ------------------------------------------------------------------------------------ storage

variable "pipeline_root_retention_days" {
  description = "Pipeline run artifacts (gs://PROJECT-pipelines) older than this are deleted."
  type        = number
  default     = 90
}

variable "noncurrent_version_retention_days" {
  description = "Overwritten or deleted object versions are kept this long, then deleted."
  type        = number
  default     = 30
}

variable "image_retention_count" {
  description = "Most recent versions of each image kept in Artifact Registry; older ones are deleted."
  type        = number
  default     = 20
}

# ------------------------------------------------------------------------------------ GitHub

variable "github_repository" {
  description = "owner/name of the GitHub repository whose Actions may impersonate the CI service account."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like owner/name."
  }
}

variable "github_ref" {
  description = "The only Git ref whose workflow runs may deploy (the default branch)."
  type        = string
  default     = "refs/heads/main"
}

# ------------------------------------------------------------------------------------ GKE

variable "cluster_name" {
  description = "Name of the GKE cluster."
  type        = string
  default     = "retention"
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the cluster's control plane (your workstation, a bastion)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "master_ipv4_cidr_block" {
  description = "The /28 of the private control plane; must not overlap the subnet ranges."
  type        = string
  default     = "172.16.0.0/28"
}

variable "subnet_cidr" {
  description = "Primary range of the cluster subnet (nodes)."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pods."
  type        = string
  default     = "10.20.0.0/16"
}

variable "services_cidr" {
  description = "Secondary range for services."
  type        = string
  default     = "10.30.0.0/20"
}

variable "cpu_machine_type" {
  description = "CPU pool machine type; the largest CPU task of the pipeline (8 vCPU) must fit one node."
  type        = string
  default     = "n2-standard-16"
}

variable "cpu_pool_min_nodes" {
  description = "Fewest CPU nodes (the serving stack runs here)."
  type        = number
  default     = 1
}

variable "cpu_pool_max_nodes" {
  description = "Most CPU nodes."
  type        = number
  default     = 6
}

variable "gpu_machine_type" {
  description = "GPU pool machine type: a g2 machine with one L4 that fits an 8 vCPU / 32 GB task."
  type        = string
  default     = "g2-standard-12"
}

variable "gpu_accelerator_type" {
  description = "GPU of the GPU pool."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_pool_min_nodes" {
  description = "Fewest GPU nodes; 0 lets the pool scale to zero when no GPU pod is pending."
  type        = number
  default     = 0
}

variable "gpu_pool_max_nodes" {
  description = "Most GPU nodes."
  type        = number
  default     = 3
}

variable "gpu_driver_version" {
  description = "NVIDIA driver GKE installs on GPU nodes (DEFAULT or LATEST); torch 2.13 (CUDA 13) needs >= 580."
  type        = string
  default     = "LATEST"
}

# ------------------------------------------------------------------------------------ serving

variable "enable_kserve" {
  description = "Install cert-manager and KServe with Helm, and create the serving namespace, its Kubernetes service account and the ledger secret. Needs the cluster to exist (apply once with false first)."
  type        = bool
  default     = false
}

variable "serving_namespace" {
  description = "Namespace of the InferenceServices (serving.namespace in configs/gcp.yaml)."
  type        = string
  default     = "retention"
}

variable "serving_service_account" {
  description = "Kubernetes service account the InferenceServices run as; Workload Identity maps it to the serving Google service account."
  type        = string
  default     = "retention-serving"
}

variable "kserve_deployment_mode" {
  description = "KServe's default deployment mode: Knative (scale to zero, canary traffic, concurrency autoscaling; installs Knative Serving with Kourier) or Standard (Deployment + HPA on CPU/memory, nothing else). Must match the mode the rendered InferenceServices ask for."
  type        = string
  default     = "Knative"

  validation {
    condition     = contains(["Knative", "Standard"], var.kserve_deployment_mode)
    error_message = "kserve_deployment_mode is Knative or Standard."
  }
}

variable "knative_version" {
  description = "Knative operator Helm chart version (https://knative.github.io/operator); Knative mode only."
  type        = string
  default     = "v1.19.0"
}

variable "kserve_version" {
  description = "KServe Helm chart version (kserve-crd and kserve, oci://ghcr.io/kserve/charts)."
  type        = string
  default     = "v0.21.0"
}

variable "cert_manager_version" {
  description = "cert-manager Helm chart version (https://charts.jetstack.io)."
  type        = string
  default     = "v1.18.2"
}

# ------------------------------------------------------------------------------------ Cloud SQL

variable "db_tier" {
  description = "Cloud SQL machine tier of the contact ledger."
  type        = string
  default     = "db-custom-1-3840"
}

variable "db_availability_type" {
  description = "ZONAL, or REGIONAL for a standby in a second zone."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.db_availability_type)
    error_message = "db_availability_type is ZONAL or REGIONAL."
  }
}
