//! The Secret Service backend (D-Bus), through `zbus-secret-service-keyring-store`.
//!
//! Items are created in the default collection with the attributes `service` and `username`
//! (exactly those two, so entries made by other tools on the same attributes match) and the
//! label passed to [`Keyring::set`]. The D-Bus session negotiates a Diffie-Hellman encrypted
//! transfer of the secret.

use std::collections::HashMap;

use keyring_core::{Entry, Error as KError};
use lango_crypto::SecretString;
use zbus_secret_service_keyring_store::Store;
use zeroize::Zeroize;

use crate::{CALL_TIMEOUT, Error, Keyring, Probe, with_timeout};

const NAME: &str = "secret-service";

pub(crate) struct SecretService;

/// Maps a store error to ours without ever formatting a value the error may carry. The raw
/// bytes a decoding error carries (the stored secret) are wiped before they are freed.
fn map(e: KError) -> Error {
    match e {
        KError::BadEncoding(mut raw) => {
            raw.zeroize();
            Error::Backend {
                backend: NAME.into(),
                reason: "the stored value is not UTF-8 text".into(),
            }
        }
        KError::BadDataFormat(mut raw, _) => {
            raw.zeroize();
            Error::Backend {
                backend: NAME.into(),
                reason: "the stored value is not in the expected format".into(),
            }
        }
        KError::NoStorageAccess(p) => Error::AccessDenied {
            backend: NAME.into(),
            reason: p.to_string(),
        },
        KError::PlatformFailure(p) => Error::Unavailable {
            backend: NAME.into(),
            reason: p.to_string(),
        },
        KError::Ambiguous(v) => Error::Backend {
            backend: NAME.into(),
            reason: format!(
                "{} items match this entry; remove the duplicates with secret-tool",
                v.len()
            ),
        },
        KError::NoDefaultStore => Error::Unavailable {
            backend: NAME.into(),
            reason: "no credential store".into(),
        },
        KError::NoEntry => Error::Backend {
            backend: NAME.into(),
            reason: "no such entry".into(),
        },
        _ => Error::Backend {
            backend: NAME.into(),
            reason: "the Secret Service rejected the request".into(),
        },
    }
}

fn entry(service: &str, account: &str, label: Option<&str>) -> Result<Entry, Error> {
    let store = Store::new().map_err(map)?;
    let store: std::sync::Arc<keyring_core::CredentialStore> = store;
    match label {
        Some(l) => {
            let mods = HashMap::from([("label", l)]);
            Entry::new_in_store_with_modifiers(&store, service, account, &mods).map_err(map)
        }
        None => Entry::new_in_store(&store, service, account).map_err(map),
    }
}

impl Keyring for SecretService {
    fn backend(&self) -> &str {
        NAME
    }

    fn get(&self, service: &str, account: &str) -> Result<Option<SecretString>, Error> {
        let (s, a) = (service.to_owned(), account.to_owned());
        with_timeout(CALL_TIMEOUT, move || {
            let e = entry(&s, &a, None)?;
            match e.get_password() {
                Ok(p) => Ok(Some(SecretString::new(p))),
                Err(KError::NoEntry) => Ok(None),
                Err(e) => Err(map(e)),
            }
        })
    }

    fn set(
        &self,
        service: &str,
        account: &str,
        label: &str,
        secret: &SecretString,
    ) -> Result<(), Error> {
        let (s, a, l) = (service.to_owned(), account.to_owned(), label.to_owned());
        let v = secret.duplicate();
        with_timeout(CALL_TIMEOUT, move || {
            entry(&s, &a, Some(&l))?
                .set_password(v.expose())
                .map_err(map)
        })
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, Error> {
        let (s, a) = (service.to_owned(), account.to_owned());
        with_timeout(CALL_TIMEOUT, move || {
            match entry(&s, &a, None)?.delete_credential() {
                Ok(()) => Ok(true),
                Err(KError::NoEntry) => Ok(false),
                Err(e) => Err(map(e)),
            }
        })
    }

    fn probe(&self, service: &str, account: &str) -> Result<Probe, Error> {
        let (s, a) = (service.to_owned(), account.to_owned());
        with_timeout(CALL_TIMEOUT, move || {
            // A search only: nothing is created, changed or deleted (KR-1).
            let present = match entry(&s, &a, None)?.get_credential() {
                Ok(_) => true,
                Err(KError::NoEntry) => false,
                Err(e) => return Err(map(e)),
            };
            Ok(Probe {
                backend: NAME.into(),
                entry_present: present,
            })
        })
    }
}
