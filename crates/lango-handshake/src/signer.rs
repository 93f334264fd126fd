//! The wallet seam: where handshake signatures come from.

use std::sync::Arc;

use async_trait::async_trait;
use lango_crypto::wallet::{PublicKey, RecoverableSignature, WalletKey};

use crate::Error;

/// The local wallet as the handshake uses it: its public key and `sign_message`, which signs
/// Keccak-256 of the message (C-2). There is deliberately no way to sign a raw digest (C-5).
///
/// Both methods MUST use the same key source (C-8). The signing helpers of this crate check
/// every signature they obtain against [`Wallet::public_key`] before sending it, and report a
/// mismatch as [`Error::Wallet`].
#[async_trait]
pub trait Wallet: Send + Sync {
    /// The 33-byte compressed wallet key.
    async fn public_key(&self) -> Result<PublicKey, Error>;
    /// A 65-byte signature over `Keccak-256(message)`, low-S, `v ∈ {0,1}`.
    async fn sign_message(&self, message: &[u8]) -> Result<RecoverableSignature, Error>;
}

#[async_trait]
impl Wallet for WalletKey {
    async fn public_key(&self) -> Result<PublicKey, Error> {
        Ok(WalletKey::public_key(self))
    }

    async fn sign_message(&self, message: &[u8]) -> Result<RecoverableSignature, Error> {
        WalletKey::sign_message(self, message).map_err(|e| Error::Wallet(e.to_string()))
    }
}

#[async_trait]
impl<T: Wallet + ?Sized> Wallet for Arc<T> {
    async fn public_key(&self) -> Result<PublicKey, Error> {
        (**self).public_key().await
    }

    async fn sign_message(&self, message: &[u8]) -> Result<RecoverableSignature, Error> {
        (**self).sign_message(message).await
    }
}

/// Signs `message` and checks that the signature recovers the wallet's own key (C-8).
pub(crate) async fn sign_checked<W: Wallet + ?Sized>(
    wallet: &W,
    public_key: &PublicKey,
    message: &[u8],
) -> Result<RecoverableSignature, Error> {
    let sig = wallet.sign_message(message).await?;
    crate::sig::verify_signed_message(public_key, message, &sig.to_bytes()).map_err(|_| {
        Error::Wallet("wallet signature does not verify under the wallet's public key".to_owned())
    })?;
    Ok(sig)
}
