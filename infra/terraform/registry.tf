# Container images (cpu, gpu, serving) and compiled pipeline templates (KFP format).

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption: the repository holds images and templates built from the repository's source, no customer data.
  location      = var.region
  repository_id = local.docker_repo_id
  format        = "DOCKER"
  description   = "Retention platform images: cpu, gpu, serving (make images)."
  labels        = local.labels

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.image_retention_count
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days; the keep-recent policy wins for the newest versions
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "templates" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption: the repository holds images and templates built from the repository's source, no customer data.
  location      = var.region
  repository_id = local.kfp_repo_id
  format        = "KFP"
  description   = "Compiled retention pipeline templates (uploaded by .github/workflows/retrain.yml)."
  labels        = local.labels

  depends_on = [google_project_service.apis]
}
