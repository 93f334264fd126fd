//! The production response filter with the vault's secret values as known secrets
//! (protocol spec item 4): a tool that echoes a stored secret has it redacted.
//! Kept apart from [`crate::sanitize`], which stays free of crate references so the fuzz
//! crate can compile it alone.

use lango_secrets::{Caller, SecretsStore};

use crate::sanitize::{KnownSecrets, OwnerProtectionConfig, ResponseFilter};

/// Every value stored in `store`, decrypted, as [`KnownSecrets`]. A secret that cannot be
/// decrypted is skipped with a warning (no tool can read and echo it either); a store that
/// cannot be listed is an error. Each read counts as an access of that secret.
pub async fn from_vault(store: &SecretsStore) -> crate::Result<KnownSecrets> {
    let infos = store
        .list()
        .await
        .map_err(|e| crate::Error::Store(e.to_string()))?;
    let mut values = Vec::with_capacity(infos.len());
    for info in infos {
        match store.get(&info.name, Caller::Operator).await {
            Ok(v) => values.push(v),
            Err(e) => tracing::warn!(
                secret = %info.name,
                error = %e,
                "stored secret unreadable: not added to the response filter's known secrets"
            ),
        }
    }
    Ok(KnownSecrets::new(values.iter().map(|v| v.expose())))
}

/// The response filter a node serves with: `owner` protection plus the vault's values as
/// known secrets ([`from_vault`]).
pub async fn response_filter(
    owner: &OwnerProtectionConfig,
    store: &SecretsStore,
) -> crate::Result<ResponseFilter> {
    let mut filter = ResponseFilter::from_config(owner);
    filter
        .sanitizer_mut()
        .set_known_secrets(from_vault(store).await?);
    Ok(filter)
}
