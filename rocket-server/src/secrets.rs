//! argon2 PHC secrets: verification for the frontends and hashing for `rocket-cli
//! hash-secret`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Whether `secret` matches the argon2 PHC hash `phc`. A malformed hash matches nothing.
pub fn verify_phc(phc: &str, secret: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), phc)
        .is_ok()
}

/// A PHC hash of `secret` (argon2id, the crate's recommended parameters, a random salt),
/// for the `Secret` of a user in the config.
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(secret.as_bytes())?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_accepted_by_the_config() {
        let phc = hash_secret("correct horse").unwrap();
        assert!(rocket_proto::is_phc(&phc));
        assert!(verify_phc(&phc, "correct horse"));
        assert!(!verify_phc(&phc, "correct horsf"));
        assert!(!verify_phc("$argon2id$garbage", "x"));
        assert_ne!(hash_secret("correct horse").unwrap(), phc, "salted");
        let json = format!(
            r#"{{"Hubs":[{{"Path":"/a","Users":{{"u":{{"Secret":"{phc}","Permission":1}}}}}}]}}"#
        );
        rocket_proto::Config::from_json(&json).unwrap();
    }
}
