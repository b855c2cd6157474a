//! Join tokens: who may join which meeting, as which site and role, until when.
//!
//! A token is `base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part))`, both parts without padding, so
//! it can travel in a URL query string unescaped. The secret is the per-installation key from
//! [`Store::secret`](crate::Store::secret). Tokens are bearer credentials: never log them.
//!
//! [`verify`] is a parser of outside bytes: it never panics, checks the MAC in constant time before it looks at the
//! payload, and rejects anything longer than [`MAX_TOKEN_LEN`] before doing any work.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diemcau_proto::Role;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token [`verify`] accepts, in bytes. Real tokens are about 150 bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// `meeting_id` of a standby token: the site's page waits on `/ws/standby` to be rung for a convened meeting. No
/// meeting has this id (SQLite row ids start at 1), so a standby token joins none.
pub const STANDBY_MEETING: i64 = 0;

/// What a token grants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The meeting the bearer may join.
    pub meeting_id: i64,
    /// The site the bearer joins as (for a technician: the site they act for, usually the chair's).
    pub site_id: i64,
    /// Role of the connection.
    pub role: Role,
    /// Expiry, unix seconds: the token is refused from this second on.
    pub exp: i64,
}

/// Why a token was refused. The variants are safe to show to the client.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all: too long, wrong shape, bad base64, or a payload that is not the expected JSON.
    #[error("malformed token")]
    Malformed,
    /// Well-formed, but not signed by this server (or altered since).
    #[error("token signature is invalid")]
    BadSignature,
    /// Genuine, but past its expiry time.
    #[error("token has expired")]
    Expired,
}

/// The MAC keyed with `secret`.
fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so `new_from_slice` cannot fail for `Hmac<Sha256>`; the
    // match only keeps `unwrap` out of the code.
    match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => <HmacSha256 as Mac>::new(&Default::default()),
    }
}

/// Signs raw payload bytes: `base64url(payload) "." base64url(mac)`.
fn sign_payload(secret: &[u8], payload: &[u8]) -> String {
    let body = URL_SAFE_NO_PAD.encode(payload);
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let tag = m.finalize().into_bytes();
    let mut out = body;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut out);
    out
}

/// Issues a token carrying `claims`, signed with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    // Serialising this plain struct cannot fail; an empty payload would only make a token that never verifies.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    sign_payload(secret, &payload)
}

/// Checks `token` against `secret` and the current time `now_unix` (seconds), and returns its claims.
///
/// Order of checks: length and shape, then the signature (constant time), then the payload, then the expiry — so a
/// forged token is always [`TokenError::BadSignature`], never a hint about its content.
pub fn verify(secret: &[u8], token: &str, now_unix: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if body.is_empty() || sig.contains('.') {
        return Err(TokenError::Malformed);
    }
    let tag = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if now_unix >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims { meeting_id: 7, site_id: 42, role: Role::Site, exp: 1_000_000 }
    }

    #[test]
    fn round_trip() {
        let t = sign(SECRET, &claims());
        assert!(t.len() < 200, "{t}");
        assert!(
            t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "not URL-safe: {t}"
        );
        assert_eq!(verify(SECRET, &t, 999_999), Ok(claims()));
        for role in [Role::Chair, Role::Site, Role::Technician] {
            let c = Claims { role, ..claims() };
            assert_eq!(verify(SECRET, &sign(SECRET, &c), 0), Ok(c));
        }
    }

    #[test]
    fn expired_at_and_after_exp() {
        let t = sign(SECRET, &claims());
        assert_eq!(verify(SECRET, &t, 1_000_000), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &t, i64::MAX), Err(TokenError::Expired));
    }

    #[test]
    fn wrong_secret() {
        let t = sign(SECRET, &claims());
        assert_eq!(verify(b"other", &t, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(b"", &t, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_payload() {
        let t = sign(SECRET, &claims());
        let (_, sig) = t.split_once('.').unwrap_or_default();
        let forged = Claims { role: Role::Chair, ..claims() };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap_or_default());
        assert_eq!(verify(SECRET, &format!("{body}.{sig}"), 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_signature() {
        let t = sign(SECRET, &claims());
        let (body, _) = t.split_once('.').unwrap_or_default();
        let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert_eq!(verify(SECRET, &format!("{body}.{zero}"), 0), Err(TokenError::BadSignature));
        // A truncated tag is still checked against the whole MAC.
        let short = URL_SAFE_NO_PAD.encode([0u8; 4]);
        assert_eq!(verify(SECRET, &format!("{body}.{short}"), 0), Err(TokenError::BadSignature));
        assert_eq!(verify(SECRET, &format!("{body}."), 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let t = sign(SECRET, &claims());
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \0";
        for i in 0..t.len() {
            for &c in alphabet {
                let mut b = t.clone().into_bytes();
                if b[i] == c {
                    continue;
                }
                b[i] = c;
                let s = String::from_utf8(b).unwrap_or_default();
                assert!(verify(SECRET, &s, 0).is_err(), "accepted {s}");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        let huge_valid_shape = format!("{}.{}", "a".repeat(2000), "b".repeat(43));
        let cases: Vec<&str> = vec![
            "",
            ".",
            "..",
            "...",
            "abc",
            ".abc",
            "abc.def.ghi",
            "!!!.???",
            "eyJ.\u{1F600}",
            "a b.c d",
            "YQ==.YQ==",
            &huge,
            &huge_valid_shape,
        ];
        for c in cases {
            assert_eq!(verify(SECRET, c, 0), Err(TokenError::Malformed), "{c:?}");
        }
    }

    #[test]
    fn signed_garbage_payloads_are_malformed() {
        let payloads: &[&[u8]] = &[
            b"",
            b"\xff\xfe\xfd",
            b"{\"meeting_id\":1,\"site_id\":2,\"role\":\"chair\",\"exp\":\xff}",
            b"null",
            b"[]",
            b"{}",
            b"{\"meeting_id\":1,\"site_id\":2,\"role\":\"king\",\"exp\":10}",
            b"{\"meeting_id\":\"1\",\"site_id\":2,\"role\":\"chair\",\"exp\":10}",
            b"{\"meeting_id\":1,\"site_id\":2,\"role\":\"chair\",\"exp\":10,\"admin\":true}",
            b"{\"meeting_id\":1e400,\"site_id\":2,\"role\":\"chair\",\"exp\":10}",
        ];
        for p in payloads {
            let t = sign_payload(SECRET, p);
            assert_eq!(verify(SECRET, &t, 0), Err(TokenError::Malformed), "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        // A small deterministic fuzz: random byte soup drawn mostly from the token alphabet.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let len = (next() % 200) as usize;
            let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect();
            assert!(verify(SECRET, &s, 0).is_err());
        }
    }

    #[test]
    fn display_messages() {
        assert_eq!(TokenError::Malformed.to_string(), "malformed token");
        assert_eq!(TokenError::BadSignature.to_string(), "token signature is invalid");
        assert_eq!(TokenError::Expired.to_string(), "token has expired");
    }
}
