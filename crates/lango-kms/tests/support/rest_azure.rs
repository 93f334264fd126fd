//! A local Azure Key Vault REST server (API 7.4) that answers the real shapes:
//!
//! - `POST /keys/{name}[/{version}]/sign|encrypt|decrypt?api-version=7.4` with base64url
//!   bodies `{"alg","value"}` → `{"kid","value"}`; the version segment may be absent
//!   (`/keys/{name}/sign`) or empty (`/keys/{name}//sign`, what the SDKs send for "latest");
//! - `ES256` with a P-256 key (raw `r‖s`, 64 bytes), `RSA-OAEP` (SHA-1) and `RSA-OAEP-256` with
//!   RSA-2048 keys, one per version; the `kid` names the version used;
//! - `GET /keys/{name}[/{version}]` → `{"key": JWK, "attributes"}`; `GET /keys` → pages of
//!   `{"value":[{"kid","attributes"}],"nextLink"}`;
//! - errors as `{"error":{"code","message"}}` with their HTTP status.
//!
//! Every request must carry `Authorization: Bearer TOKEN` and `api-version=7.4`. Faults can be
//! queued: a status (optionally with headers such as `Retry-After`), a dropped connection, a
//! delay, a `kid` naming another key, or a `nextLink` leaving the vault.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{
        KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm,
        OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    },
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::rest_server::{Recorded, Reply, RestServer};

pub const TOKEN: &str = "azure-test-token-77e0b3";
pub const SIGNER: &str = "lango-signer";
pub const WRAPPER: &str = "lango-wrapper";
pub const OTHER: &str = "lango-other";
pub const SIGNER_VERSION: &str = "5e1f0c2d3b4a59687766554433221100";

pub fn version_id(n: usize) -> String {
    format!(
        "{:032x}",
        0x00ab_cdef_0000_0000_0000_0000_0000_0000u128 + n as u128
    )
}

pub fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
}

/// An error with an inner error code, as Key Vault sends for a disabled key
/// (`Forbidden` / `KeyDisabled`) or a caller without the role (`Forbidden` / `ForbiddenByRbac`).
pub fn error_with_inner(status: u16, code: &str, message: &str, inner: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "innererror": {"code": inner}}}),
    )
}

/// A fault applied to the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and error code.
    Status(u16, &'static str),
    /// Answer with this status and extra headers (`Retry-After`, `x-ms-retry-after-ms`).
    StatusWithHeaders(u16, Vec<(&'static str, &'static str)>),
    /// Close the connection without an answer.
    Drop,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer normally but with a `kid` of another key.
    WrongKid,
    /// On `GET /keys`, point `nextLink` at another host.
    EvilNextLink,
}

struct RsaVersion {
    id: String,
    key: PrivateDecryptingKey,
}

pub struct FakeAzure {
    base: Mutex<String>,
    ec: p256::ecdsa::SigningKey,
    rsa: Mutex<Vec<RsaVersion>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Return the high-S twin of signatures.
    pub high_s: AtomicBool,
    /// Every digest `sign` received.
    pub digests: Mutex<Vec<Vec<u8>>>,
    /// Every plaintext length `encrypt` received.
    pub plaintext_lens: Mutex<Vec<usize>>,
    /// Keys disabled (`attributes.enabled = false`): Key Vault refuses decrypt, sign and
    /// unwrap with them (403 `KeyDisabled`) but still encrypts and verifies (public-key
    /// operations).
    disabled: Mutex<Vec<String>>,
    /// The caller's role on the vault was removed: every key operation is 403
    /// `ForbiddenByRbac`.
    pub denied: AtomicBool,
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Reads one DER TLV: (tag, content, rest).
fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = d[0];
    let (len, hdr) = if d[1] < 0x80 {
        (usize::from(d[1]), 2)
    } else {
        let n = usize::from(d[1] & 0x7f);
        let len = d[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &d[hdr..hdr + len], &d[hdr + len..])
}

/// `(n, e)` of an RSA SPKI, as unsigned big-endian bytes.
pub fn rsa_components(spki: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, spki_body, _) = tlv(spki);
    let (_, _alg, rest) = tlv(spki_body);
    let (tag, bits, _) = tlv(rest);
    assert_eq!(tag, 0x03);
    let (_, key, _) = tlv(&bits[1..]);
    let (_, n, rest) = tlv(key);
    let (_, e, _) = tlv(rest);
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    (strip(n), strip(e))
}

impl FakeAzure {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Mutex::new(String::new()),
            ec: p256::ecdsa::SigningKey::from_slice(&[0x3c; 32]).unwrap(),
            rsa: Mutex::new(vec![RsaVersion {
                id: version_id(1),
                key: PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap(),
            }]),
            faults: Mutex::new(VecDeque::new()),
            high_s: AtomicBool::new(false),
            digests: Mutex::new(Vec::new()),
            plaintext_lens: Mutex::new(Vec::new()),
            disabled: Mutex::new(Vec::new()),
            denied: AtomicBool::new(false),
        })
    }

    /// Disables (`false`) or enables the key `name`, as `PATCH /keys/{name}` with
    /// `attributes.enabled` would.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        let mut d = self.disabled.lock().unwrap();
        d.retain(|n| n != name);
        if !enabled {
            d.push(name.to_owned());
        }
    }

    /// Key Vault's answer to `action` on key `name` in its current state, if it refuses.
    fn refusal(&self, action: &str, name: &str) -> Option<Reply> {
        if self.denied.load(Ordering::SeqCst) {
            return Some(error_with_inner(
                403,
                "Forbidden",
                &format!(
                    "Caller is not authorized to perform action on resource.\r\nAction: 'Microsoft.KeyVault/vaults/keys/{action}/action'\r\nResource: '{name}'"
                ),
                "ForbiddenByRbac",
            ));
        }
        let private_op = matches!(action, "decrypt" | "sign" | "unwrapKey");
        if private_op && self.disabled.lock().unwrap().iter().any(|n| n == name) {
            return Some(error_with_inner(
                403,
                "Forbidden",
                &format!("Operation {action} is not allowed on a disabled key."),
                "KeyDisabled",
            ));
        }
        None
    }

    pub async fn serve(self: &Arc<Self>) -> RestServer {
        let me = self.clone();
        let server = RestServer::start(Arc::new(move |r: &Recorded| me.handle(r))).await;
        *self.base.lock().unwrap() = server.url();
        server
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().unwrap().extend(faults);
    }

    /// Adds a new RSA version of the wrapping key, which becomes the latest; returns its id.
    pub fn rotate(&self) -> String {
        let mut rsa = self.rsa.lock().unwrap();
        let id = version_id(rsa.len() + 1);
        rsa.push(RsaVersion {
            id: id.clone(),
            key: PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap(),
        });
        id
    }

    pub fn latest_rsa_version(&self) -> String {
        self.rsa.lock().unwrap().last().unwrap().id.clone()
    }

    pub fn rsa_spki(&self, version: &str) -> Vec<u8> {
        let rsa = self.rsa.lock().unwrap();
        let v = rsa.iter().find(|v| v.id == version).unwrap();
        v.key.public_key().as_der().unwrap().as_ref().to_vec()
    }

    pub fn ec_sec1(&self) -> Vec<u8> {
        self.ec
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    pub fn ec_pem(&self) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        let der = self.ec.verifying_key().to_public_key_der().unwrap();
        crate::rest_server::spki_pem(der.as_bytes())
    }

    fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.base.lock().unwrap())
    }

    fn handle(&self, r: &Recorded) -> Reply {
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            )
            .with_header(
                "www-authenticate",
                "Bearer authorization=\"https://login.microsoftonline.com/tenant\", resource=\"https://vault.azure.net\"",
            );
        }
        if r.query_param("api-version").as_deref() != Some("7.4") {
            return error(
                400,
                "BadParameter",
                "The specified version is not recognized. Consider using the latest supported version (7.4).",
            );
        }
        let fault = self.faults.lock().unwrap().pop_front();
        let mut wrong_kid = false;
        let mut evil_link = false;
        match fault {
            None => {}
            Some(Fault::Status(status, code)) => {
                return error(status, code, &format!("injected {status} {code}"));
            }
            Some(Fault::StatusWithHeaders(status, headers)) => {
                let mut reply = error(status, "Throttled", &format!("injected {status}"));
                for (k, v) in headers {
                    reply = reply.with_header(k, v);
                }
                return reply;
            }
            Some(Fault::Drop) => return Reply::Drop,
            Some(Fault::Delay(d)) => return Reply::Delay(d, Box::new(self.route(r, false, false))),
            Some(Fault::WrongKid) => wrong_kid = true,
            Some(Fault::EvilNextLink) => evil_link = true,
        }
        self.route(r, wrong_kid, evil_link)
    }

    fn route(&self, r: &Recorded, wrong_kid: bool, evil_link: bool) -> Reply {
        if r.path == "/keys" && r.method == "GET" {
            return self.list(r, evil_link);
        }
        let Some(rest) = r.path.strip_prefix("/keys/") else {
            return error(404, "NotFound", "unknown path");
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let is_action = |s: &str| matches!(s, "sign" | "encrypt" | "decrypt");
        let (name, version, action) = match (r.method.as_str(), parts.as_slice()) {
            ("GET", [name]) | ("GET", [name, ""]) => (*name, "", None),
            ("GET", [name, version]) => (*name, *version, None),
            ("POST", [name, action]) if is_action(action) => (*name, "", Some(*action)),
            ("POST", [name, version, action]) if is_action(action) => {
                (*name, *version, Some(*action))
            }
            _ => return error(404, "NotFound", "unknown path"),
        };
        let body = r.json();
        if let Some(reply) = action.and_then(|a| self.refusal(a, name)) {
            return reply;
        }
        match action {
            None => self.get_key(name, version),
            Some("sign") => self.sign(name, version, &body, wrong_kid),
            Some(op) => self.crypt(op, name, version, &body, wrong_kid),
        }
    }

    fn not_found(name: &str) -> Reply {
        error(
            404,
            "KeyNotFound",
            &format!("A key with (name/id) {name} was not found in this key vault."),
        )
    }

    fn get_key(&self, name: &str, version: &str) -> Reply {
        let attributes = json!({"enabled": true, "created": 1_700_000_000, "updated": 1_700_000_000,
                                "recoveryLevel": "Recoverable+Purgeable"});
        if name == SIGNER {
            if !version.is_empty() && version != SIGNER_VERSION {
                return Self::not_found(name);
            }
            let point = self.ec_sec1();
            return Reply::json(
                200,
                json!({"key": {"kid": self.kid(SIGNER, SIGNER_VERSION), "kty": "EC", "crv": "P-256",
                               "x": b64(&point[1..33]), "y": b64(&point[33..]),
                               "key_ops": ["sign", "verify"]},
                       "attributes": attributes}),
            );
        }
        if name != WRAPPER {
            return Self::not_found(name);
        }
        let rsa = self.rsa.lock().unwrap();
        let v = if version.is_empty() {
            rsa.last()
        } else {
            rsa.iter().find(|v| v.id == version)
        };
        let Some(v) = v else {
            return Self::not_found(name);
        };
        let spki = v.key.public_key().as_der().unwrap().as_ref().to_vec();
        let (n, e) = rsa_components(&spki);
        Reply::json(
            200,
            json!({"key": {"kid": self.kid(WRAPPER, &v.id), "kty": "RSA", "n": b64(&n), "e": b64(&e),
                           "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"]},
                   "attributes": attributes}),
        )
    }

    fn value(body: &Value) -> Result<Vec<u8>, Reply> {
        body["value"]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or_else(|| error(400, "BadParameter", "Property value is required."))
    }

    fn sign(&self, name: &str, version: &str, body: &Value, wrong_kid: bool) -> Reply {
        if name == WRAPPER {
            return error(
                400,
                "BadParameter",
                "Key and signing algorithm are not compatible.",
            );
        }
        if name != SIGNER || !(version.is_empty() || version == SIGNER_VERSION) {
            return Self::not_found(name);
        }
        if body["alg"] != "ES256" {
            return error(
                400,
                "BadParameter",
                "Invalid algorithm for an EC P-256 key.",
            );
        }
        let digest = match Self::value(body) {
            Ok(d) => d,
            Err(reply) => return reply,
        };
        if digest.len() != 32 {
            return error(400, "BadParameter", "Invalid digest length for ES256.");
        }
        self.digests.lock().unwrap().push(digest.clone());
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sig: p256::ecdsa::Signature = self.ec.sign_prehash(&digest).unwrap();
        let sig = if self.high_s.load(Ordering::SeqCst) {
            let low = sig.normalize_s();
            p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes())
                .unwrap()
        } else {
            sig
        };
        let kid = if wrong_kid {
            self.kid(OTHER, SIGNER_VERSION)
        } else {
            self.kid(SIGNER, SIGNER_VERSION)
        };
        Reply::json(200, json!({"kid": kid, "value": b64(&sig.to_bytes())}))
    }

    fn crypt(&self, op: &str, name: &str, version: &str, body: &Value, wrong_kid: bool) -> Reply {
        if name == SIGNER {
            return error(
                400,
                "BadParameter",
                "Key and encryption algorithm are not compatible.",
            );
        }
        if name != WRAPPER {
            return Self::not_found(name);
        }
        let alg: &'static OaepAlgorithm = match body["alg"].as_str() {
            Some("RSA-OAEP") => &OAEP_SHA1_MGF1SHA1,
            Some("RSA-OAEP-256") => &OAEP_SHA256_MGF1SHA256,
            _ => return error(400, "BadParameter", "Invalid algorithm for an RSA key."),
        };
        let input = match Self::value(body) {
            Ok(v) => v,
            Err(reply) => return reply,
        };
        let rsa = self.rsa.lock().unwrap();
        let v = if version.is_empty() {
            rsa.last()
        } else {
            rsa.iter().find(|v| v.id == version)
        };
        let Some(v) = v else {
            return Self::not_found(name);
        };
        let output = if op == "encrypt" {
            self.plaintext_lens.lock().unwrap().push(input.len());
            let public = OaepPublicEncryptingKey::new(v.key.public_key()).unwrap();
            let mut out = vec![0u8; public.ciphertext_size()];
            match public.encrypt(alg, &input, &mut out, None) {
                Ok(ct) => ct.to_vec(),
                Err(_) => {
                    return error(
                        400,
                        "BadParameter",
                        "The plaintext is too long for the key and algorithm.",
                    );
                }
            }
        } else {
            let private = OaepPrivateDecryptingKey::new(v.key.clone()).unwrap();
            let mut out = vec![0u8; private.min_output_size()];
            match private.decrypt(alg, &input, &mut out, None) {
                Ok(pt) => pt.to_vec(),
                Err(_) => return error(400, "BadParameter", "Bad Request"),
            }
        };
        let kid = if wrong_kid {
            self.kid(OTHER, &v.id)
        } else {
            self.kid(WRAPPER, &v.id)
        };
        Reply::json(200, json!({"kid": kid, "value": b64(&output)}))
    }

    fn list(&self, r: &Recorded, evil_link: bool) -> Reply {
        let names = [SIGNER, WRAPPER, OTHER];
        let start = r
            .query_param("$skiptoken")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let end = (start + 2).min(names.len());
        let base = self.base.lock().unwrap().clone();
        let value: Vec<Value> = names[start..end]
            .iter()
            .map(|n| {
                json!({"kid": format!("{base}/keys/{n}"),
                       "attributes": {"enabled": *n != OTHER, "recoveryLevel": "Recoverable+Purgeable"},
                       "managed": false})
            })
            .collect();
        let next = if evil_link {
            Value::from("https://attacker.example/keys?api-version=7.4&$skiptoken=2")
        } else if end < names.len() {
            Value::from(format!(
                "{base}/keys?api-version=7.4&$skiptoken={end}&maxresults=2"
            ))
        } else {
            Value::Null
        };
        Reply::json(200, json!({"value": value, "nextLink": next}))
    }
}
