//! argon2 PHC secrets: verification for the frontends and hashing for `rocket-cli
//! hash-secret`.

use argon2::Argon2;
use argon2::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Whether `secret` matches the argon2 PHC hash `phc`. A malformed hash matches nothing.
pub fn verify_phc(phc: &str, secret: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), phc)
        .is_ok()
}

/// Whether `phc` is an argon2 PHC hash this server can verify: it parses, and its
/// algorithm, version, parameters, salt and hash are all acceptable to argon2. The error
/// says what is wrong without repeating the hash.
pub(crate) fn check_phc(phc: &str) -> Result<(), String> {
    let hint = "write it with `rocket-cli hash-secret`";
    let hash = PasswordHash::new(phc)
        .map_err(|e| format!("is not a valid argon2 PHC hash ({e}); {hint}"))?;
    argon2::Algorithm::try_from(hash.algorithm.as_str())
        .map_err(|e| format!("has an unknown argon2 algorithm ({e}); {hint}"))?;
    if let Some(version) = hash.version {
        argon2::Version::try_from(version)
            .map_err(|e| format!("has an unsupported argon2 version ({e}); {hint}"))?;
    }
    argon2::Params::try_from(&hash)
        .map_err(|e| format!("has invalid argon2 parameters ({e}); {hint}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("has no salt or no hash; {hint}"));
    }
    Ok(())
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
        crate::Config::from_json(&json).unwrap();
    }

    #[test]
    fn hashes_that_cannot_be_verified_are_refused_without_echo() {
        let good = hash_secret("s").unwrap();
        assert_eq!(check_phc(&good), Ok(()));
        let (head, tail) = good.rsplit_once('$').unwrap();
        for (bad, why) in [
            (
                "$argon2id$v=19$m=abc,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "parameters",
            ),
            (
                "$argon2id$v=19$m=19456,t=0,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "parameters",
            ),
            (
                "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "parameters",
            ),
            (
                "$argon2id$v=18$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "version",
            ),
            (
                "$argon2x$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "algorithm",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
                "no salt or no hash",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                "PHC",
            ),
            (&format!("{head}$%%%{tail}"), "PHC"),
        ] {
            let e = check_phc(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(
                !e.contains("RdescudvJCsgt3ub") && !e.contains(tail),
                "no echo: {e}"
            );
            assert!(
                !verify_phc(bad, "s"),
                "what fails the check verifies nothing: {bad}"
            );
        }
    }
}
