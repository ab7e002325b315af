# Four service accounts, each with only what its job needs:
#   pipeline-runner  runs the Vertex AI pipeline (gcp.service_account in configs/gcp.yaml)
#   retention-ci     GitHub Actions: push images and templates, submit runs as pipeline-runner
#   retention-serving the InferenceServices, through Workload Identity
#   gke-nodes        the GKE nodes themselves (logs, metrics, image pulls)

resource "google_service_account" "pipeline_runner" {
  account_id   = "pipeline-runner"
  display_name = "Retention pipeline runner (Vertex AI Pipelines)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "ci" {
  account_id   = "retention-ci"
  display_name = "Retention CI (GitHub Actions through Workload Identity Federation)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "serving" {
  account_id   = "retention-serving"
  display_name = "Retention serving (KServe InferenceServices through Workload Identity)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "gke_nodes" {
  account_id   = "retention-gke-nodes"
  display_name = "Retention GKE nodes"

  depends_on = [google_project_service.apis]
}

# ------------------------------------------------------------------------ pipeline-runner

# Create the per-step custom jobs of a pipeline run and write their metadata.
resource "google_project_iam_member" "runner_aiplatform" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.pipeline_runner.member
}

resource "google_storage_bucket_iam_member" "runner_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.pipeline_runner.member
}

resource "google_storage_bucket_iam_member" "runner_pipelines" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.pipeline_runner.member
}

resource "google_storage_bucket_iam_member" "runner_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.pipeline_runner.member
}

resource "google_artifact_registry_repository_iam_member" "runner_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.pipeline_runner.member
}

# ------------------------------------------------------------------------ CI

# Submit pipeline runs and create schedules (retention submit / retention schedule).
resource "google_project_iam_member" "ci_aiplatform" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.ci.member
}

# Runs execute as pipeline-runner, so the submitter must be allowed to act as it.
resource "google_service_account_iam_member" "ci_acts_as_runner" {
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.ci.member
}

resource "google_artifact_registry_repository_iam_member" "ci_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.ci.member
}

resource "google_artifact_registry_repository_iam_member" "ci_templates" {
  location   = google_artifact_registry_repository.templates.location
  repository = google_artifact_registry_repository.templates.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.ci.member
}

# The SDK checks that the pipeline root's bucket exists before it submits (storage.buckets.get).
resource "google_storage_bucket_iam_member" "ci_pipelines" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.legacyBucketReader"
  member = google_service_account.ci.member
}

# Workload Identity Federation: GitHub's OIDC tokens, from one repository and one ref only.
resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"

  depends_on = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins sub to repo:OWNER/NAME:ref:REF, but checkov cannot resolve var.github_repository (no default; its validation enforces OWNER/NAME).
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-actions"
  display_name                       = "GitHub Actions OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  # GitHub's subject for a run on a branch: repo:OWNER/NAME:ref:REF (schedule and dispatch on main).
  attribute_condition = "assertion.sub == \"repo:${var.github_repository}:ref:${var.github_ref}\" && assertion.repository == \"${var.github_repository}\""

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account_iam_member" "ci_workload_identity" {
  service_account_id = google_service_account.ci.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

# ------------------------------------------------------------------------ serving

resource "google_storage_bucket_iam_member" "serving_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.serving.member
}

resource "google_secret_manager_secret_iam_member" "serving_ledger_url" {
  secret_id = google_secret_manager_secret.ledger_url.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.serving.member
}

# Pods running as the Kubernetes service account serving_namespace/serving_service_account get
# this Google identity (the cluster's workload pool is PROJECT.svc.id.goog).
resource "google_service_account_iam_member" "serving_workload_identity" {
  service_account_id = google_service_account.serving.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.serving_namespace}/${var.serving_service_account}]"

  depends_on = [google_container_cluster.main] # the workload pool exists once the cluster does
}

# ------------------------------------------------------------------------ GKE nodes

resource "google_project_iam_member" "nodes_default" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = google_service_account.gke_nodes.member
}

resource "google_artifact_registry_repository_iam_member" "nodes_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.gke_nodes.member
}
