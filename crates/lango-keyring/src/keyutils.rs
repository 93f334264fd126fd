//! The Linux kernel keyring backend (keyutils).
//!
//! An entry is a `user` key in the user keyring (`@u`) with description
//! `<service>:<account>`. Its permissions allow the possessor to view, read, search and link it
//! and the owning user (from any session) to view, read and search it — nobody can change it,
//! and no other user sees it. The key lives in kernel memory only and is lost on reboot.
//!
//! The key is created in the session keyring (so this process possesses it while setting the
//! permissions), linked into the user keyring, then unlinked from the session keyring.

use lango_crypto::SecretString;
use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroize;

use crate::{CALL_TIMEOUT, Error, Keyring, Probe, with_timeout};

const NAME: &str = "keyutils";

pub(crate) struct Keyutils;

fn map(e: KeyError) -> Error {
    match e {
        KeyError::AccessDenied | KeyError::PermissionDenied => Error::AccessDenied {
            backend: NAME.into(),
            reason: format!("{e:?}"),
        },
        KeyError::OperationNotSupported => Error::Unavailable {
            backend: NAME.into(),
            reason: "the kernel keyring is not supported here".into(),
        },
        other => Error::Backend {
            backend: NAME.into(),
            reason: format!("{other:?}"),
        },
    }
}

fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

fn user_ring() -> Result<KeyRing, Error> {
    KeyRing::from_special_id(KeyRingIdentifier::User, false).map_err(|e| match e {
        KeyError::OperationNotSupported | KeyError::AccessDenied => Error::Unavailable {
            backend: NAME.into(),
            reason: format!("the user keyring cannot be opened ({e:?})"),
        },
        other => map(other),
    })
}

fn find(ring: &KeyRing, desc: &str) -> Result<Option<linux_keyutils::Key>, Error> {
    match ring.search(desc) {
        Ok(k) => Ok(Some(k)),
        Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => Ok(None),
        Err(e) => Err(map(e)),
    }
}

impl Keyring for Keyutils {
    fn backend(&self) -> &str {
        NAME
    }

    fn get(&self, service: &str, account: &str) -> Result<Option<SecretString>, Error> {
        let desc = description(service, account);
        with_timeout(CALL_TIMEOUT, move || {
            let ring = user_ring()?;
            let Some(key) = find(&ring, &desc)? else {
                return Ok(None);
            };
            let bytes = key.read_to_vec().map_err(map)?;
            let text = String::from_utf8(bytes).map_err(|e| {
                // Not text: still the stored secret. Wiped (volatile writes) before it is freed.
                e.into_bytes().zeroize();
                Error::Backend {
                    backend: NAME.into(),
                    reason: "the stored value is not UTF-8 text".into(),
                }
            })?;
            Ok(Some(SecretString::new(text)))
        })
    }

    fn set(
        &self,
        service: &str,
        account: &str,
        _label: &str,
        secret: &SecretString,
    ) -> Result<(), Error> {
        let desc = description(service, account);
        let value = secret.duplicate();
        with_timeout(CALL_TIMEOUT, move || {
            let user = user_ring()?;
            if let Some(old) = find(&user, &desc)? {
                old.invalidate().map_err(map)?;
            }
            let session =
                KeyRing::from_special_id(KeyRingIdentifier::Session, true).map_err(map)?;
            let key = session
                .add_key(&desc, value.expose().as_bytes())
                .map_err(map)?;
            let perms = KeyPermissionsBuilder::builder()
                .posessor(
                    Permission::VIEW | Permission::READ | Permission::SEARCH | Permission::LINK,
                )
                .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
                .build();
            let linked = key
                .set_perms(perms)
                .and_then(|()| user.link_key(key))
                .map_err(map);
            let _ = session.unlink_key(key);
            linked
        })
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, Error> {
        let desc = description(service, account);
        with_timeout(CALL_TIMEOUT, move || {
            let user = user_ring()?;
            match find(&user, &desc)? {
                Some(key) => {
                    // Invalidation needs only search permission and removes the key at once.
                    key.invalidate().map_err(map)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn probe(&self, service: &str, account: &str) -> Result<Probe, Error> {
        let desc = description(service, account);
        with_timeout(CALL_TIMEOUT, move || {
            let user = user_ring()?;
            Ok(Probe {
                backend: NAME.into(),
                entry_present: find(&user, &desc)?.is_some(),
            })
        })
    }
}
