# The BigQuery dataset the gcp profile's bq:// tables live in (data.*.uri, monitoring.decisions and
# monitoring.outcomes in configs/gcp.yaml: bq://PROJECT.retention.TABLE). Terraform makes the
# dataset; its tables are loaded as docs/gcp.md (step 5) shows.

resource "google_bigquery_dataset" "retention" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption, as the buckets: a customer-managed key would add a KMS key ring the rest of the project does not use.
  dataset_id    = local.bigquery_dataset
  friendly_name = "Retention"
  description   = "Offers, orders, journey, messages, the decision log and the outcomes the retention pipeline and its monitor read."
  location      = var.bigquery_location
  labels        = local.labels

  # Dropping the dataset with Terraform must not drop the tables loaded into it.
  delete_contents_on_destroy = false

  depends_on = [google_project_service.apis]
}

# Ingest and the monitor read the tables (retention.data.sources) as pipeline-runner: read access
# to this dataset only, and the right to run the query jobs that read them, billed to the project.
resource "google_bigquery_dataset_iam_member" "runner_data" {
  dataset_id = google_bigquery_dataset.retention.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.pipeline_runner.member
}

resource "google_project_iam_member" "runner_bigquery_jobs" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.pipeline_runner.member
}
