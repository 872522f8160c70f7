//! Operator identity for the API: tokens and their roles.
//!
//! A token is 32 random bytes, written `fleet_` + 64 hex digits, shown once when it is
//! made. The store keeps only its SHA-256: a token has 256 bits of entropy, so a slow
//! password hash would add nothing against guessing, and a plain hash lets every request
//! be checked with one indexed lookup. What a token may do is its [`Role`]; the audit
//! log names the token that acted (`token:NAME`).

use serde::{Deserialize, Serialize};

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything: devices, jobs, results, audit, status.
    Viewer,
    /// Also push and cancel jobs.
    Operator,
    /// Also manage devices (provision, labels, decommission), keys and tokens.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name, as the command line and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a token with this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a role: viewer, operator or admin"))
    }
}

/// How a token starts, so a leaked one is recognisable (and secret scanners find it).
pub const TOKEN_PREFIX: &str = "fleet_";

/// A new token's text from 32 random bytes.
pub fn token_text(random: &[u8; 32]) -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(random))
}

/// What the store keeps of a token: the SHA-256 of its text. `None` for text that is not
/// a token at all (wrong prefix or length), so garbage never reaches the database.
pub fn token_hash(text: &str) -> Option<[u8; 32]> {
    let digits = text.strip_prefix(TOKEN_PREFIX)?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(fleet_schemas::digest::sha256(text.as_bytes()).0)
}

/// A token's name: 1 to 64 of `A-Z a-z 0-9 _ - .`, the way it appears in the audit log.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(format!("`{name}` is not a token name: 1 to 64 of A-Z a-z 0-9 _ - .")) }
}

/// The audit log's actor for a token.
pub fn actor(name: &str) -> String {
    format!("token:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_weaker_ones() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer) && !Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn only_well_formed_tokens_hash() {
        let text = token_text(&[7; 32]);
        assert!(text.starts_with("fleet_") && text.len() == 70);
        assert!(token_hash(&text).is_some());
        assert_ne!(token_hash(&text), token_hash(&token_text(&[8; 32])));
        for bad in ["", "fleet_", "fleet_xyz", &text[1..], &format!("{text}0"), &text.replace("fleet_", "fleat_")] {
            assert_eq!(token_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("ci-deploy.v2").is_ok());
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
