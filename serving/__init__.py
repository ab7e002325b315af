"""KServe serving layer: predictors, the orchestrating transformer and the contact ledger.

Only the model store's contract exists so far (``retention.store.model_store``: a ``production``
pointer naming one version per model); the predictors arrive with the serving issue.
"""
