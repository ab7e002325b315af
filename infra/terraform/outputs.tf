output "image_registry" {
  description = "REGISTRY for `make images`; images are REGISTRY/{cpu,gpu,serving}:TAG (configs/gcp.yaml)."
  value       = local.image_registry
}

output "template_registry" {
  description = "Artifact Registry (KFP) URL the retrain workflow uploads compiled templates to."
  value       = local.template_host
}

output "data_bucket" {
  description = "Input data (data.*.uri in configs/gcp.yaml)."
  value       = "gs://${google_storage_bucket.data.name}"
}

output "pipeline_root" {
  description = "pipeline.pipeline_root in configs/gcp.yaml."
  value       = "gs://${google_storage_bucket.pipelines.name}/pipeline-root"
}

output "model_store" {
  description = "model_store in configs/gcp.yaml."
  value       = "gs://${google_storage_bucket.models.name}/models"
}

output "pipeline_runner_service_account" {
  description = "gcp.service_account in configs/gcp.yaml: the identity pipeline runs execute as."
  value       = google_service_account.pipeline_runner.email
}

output "ci_service_account" {
  description = "GitHub repository variable GCP_SERVICE_ACCOUNT."
  value       = google_service_account.ci.email
}

output "workload_identity_provider" {
  description = "GitHub repository variable GCP_WORKLOAD_IDENTITY_PROVIDER."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "serving_service_account" {
  description = "Google service account the InferenceServices' Kubernetes service account maps to."
  value       = google_service_account.serving.email
}

output "cluster_name" {
  description = "The GKE cluster."
  value       = google_container_cluster.main.name
}

output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.main.name} --zone ${var.zone} --project ${var.project_id}"
}

output "ledger_instance" {
  description = "Cloud SQL connection name of the contact ledger."
  value       = google_sql_database_instance.ledger.connection_name
}

output "ledger_url_secret" {
  description = "Secret Manager secret holding the ledger's SQLAlchemy URL (serving.ledger.url)."
  value       = google_secret_manager_secret.ledger_url.secret_id
}

output "bigquery_dataset" {
  description = "The dataset of the bq:// tables in configs/gcp.yaml (bq://PROJECT.retention.TABLE)."
  value       = "${var.project_id}.${google_bigquery_dataset.retention.dataset_id}"
}
