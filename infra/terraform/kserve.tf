# KServe, its webhook certificates from cert-manager, in Knative mode Knative Serving with Kourier
# (through the Knative operator), and what the InferenceServices need in their namespace. Only
# with enable_kserve = true, once the cluster exists (docs/gcp.md: the second `terraform apply`).

locals {
  knative = var.enable_kserve && var.kserve_deployment_mode == "Knative"
}

resource "helm_release" "cert_manager" {
  count = var.enable_kserve ? 1 : 0

  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_version
  namespace        = "cert-manager"
  create_namespace = true
  wait             = true

  values = [yamlencode({ crds = { enabled = true } })]

  depends_on = [google_container_node_pool.cpu]
}

resource "helm_release" "knative_operator" {
  count = local.knative ? 1 : 0

  name             = "knative-operator"
  repository       = "https://knative.github.io/operator"
  chart            = "knative-operator"
  version          = var.knative_version
  namespace        = "knative-operator"
  create_namespace = true
  wait             = true

  depends_on = [google_container_node_pool.cpu]
}

# The KnativeServing resource (charts/knative-serving): Kourier as the ingress, node selectors and
# tolerations allowed in pod specs, and no tag resolution for the private image registry.
resource "helm_release" "knative_serving" {
  count = local.knative ? 1 : 0

  name             = "knative-serving"
  chart            = "${path.module}/charts/knative-serving"
  namespace        = "knative-serving"
  create_namespace = true
  wait             = true

  values = [yamlencode({
    registries = "kind.local,ko.local,dev.local,${var.region}-docker.pkg.dev"
  })]

  depends_on = [helm_release.knative_operator]
}

resource "helm_release" "kserve_crd" {
  count = var.enable_kserve ? 1 : 0

  name             = "kserve-crd"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve-crd"
  version          = var.kserve_version
  namespace        = "kserve"
  create_namespace = true
  wait             = true

  depends_on = [helm_release.cert_manager, helm_release.knative_serving]
}

resource "helm_release" "kserve" {
  count = var.enable_kserve ? 1 : 0

  name       = "kserve"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve"
  version    = var.kserve_version
  namespace  = "kserve"
  wait       = true

  values = [yamlencode({
    kserve = {
      controller = {
        deploymentMode = var.kserve_deployment_mode
        gateway = {
          # Kourier routes Knative traffic (no Istio VirtualServices); in-cluster callers use
          # the predictors' cluster-local Services (docs/gcp.md).
          disableIstioVirtualHost = true
          disableIngressCreation  = true
        }
      }
    }
  })]

  depends_on = [helm_release.kserve_crd]
}

resource "kubernetes_namespace_v1" "serving" {
  count = var.enable_kserve ? 1 : 0

  metadata {
    name   = var.serving_namespace
    labels = { "pod-security.kubernetes.io/enforce" = "baseline" }
  }

  depends_on = [google_container_node_pool.cpu]
}

# The identity of every InferenceService pod: Workload Identity maps it to retention-serving@.
resource "kubernetes_service_account_v1" "serving" {
  count = var.enable_kserve ? 1 : 0

  metadata {
    name      = var.serving_service_account
    namespace = kubernetes_namespace_v1.serving[0].metadata[0].name
    annotations = {
      "iam.gke.io/gcp-service-account" = google_service_account.serving.email
    }
  }
}

# The ledger's URL for the transformer (key `url`), copied from Secret Manager.
resource "kubernetes_secret_v1" "ledger" {
  count = var.enable_kserve ? 1 : 0

  metadata {
    name      = "retention-ledger"
    namespace = kubernetes_namespace_v1.serving[0].metadata[0].name
  }

  data = {
    url = local.ledger_url
  }
}
