//! `kustomize edit` semantics applied in-process to a kustomization.
