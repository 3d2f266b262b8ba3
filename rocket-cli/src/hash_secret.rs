//! `rocket-cli hash-secret`: an argon2 PHC hash of a secret, for a user's `Secret` in the
//! config, so that the config file does not hold the secret itself.
//!
//! On a terminal the secret is read without echo (`rpassword`), twice, so that a typo does
//! not make a hash nobody can log in with; from a pipe, it is the first line of standard
//! input.

use std::io::{BufRead, IsTerminal};

use crate::error::Error;

/// Reads the secret (without echo on a terminal, else the first line of standard input)
/// and prints its PHC hash.
pub fn run() -> Result<(), Error> {
    let stdin = std::io::stdin();
    let phc = if stdin.is_terminal() {
        let read = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map_err(|e| Error::HashSecret(format!("cannot read the terminal: {e}")))
        };
        let secret = read("Secret (not shown): ")?;
        if read("The same again: ")? != secret {
            return Err(Error::HashSecret(
                "the two secrets differ; nothing was hashed".into(),
            ));
        }
        hash(&secret)?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::HashSecret(format!("cannot read standard input: {e}")))?;
        hash(first_line(&line))?
    };
    println!("{phc}");
    Ok(())
}

/// The line without its line ending.
fn first_line(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

fn hash(secret: &str) -> Result<String, Error> {
    if secret.is_empty() {
        return Err(Error::HashSecret(
            "no secret given (an empty Secret needs no hash: it accepts any secret)".into(),
        ));
    }
    rocket_server::hash_secret(secret).map_err(|e| Error::HashSecret(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_line_ending_and_refuses_an_empty_secret() {
        assert_eq!(first_line("s3cret\r\n"), "s3cret");
        assert_eq!(first_line("s3cret"), "s3cret");
        assert_eq!(first_line(" a b \n"), " a b ");
        let e = hash(first_line("\n")).unwrap_err().to_string();
        assert!(e.starts_with("hash-secret: no secret"), "{e}");
        assert!(hash("").is_err(), "an empty secret typed on a terminal too");
    }

    #[test]
    fn hashes_verify() {
        let phc = hash("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(rocket_server::verify_phc(&phc, "s3cret"));
        assert!(!rocket_server::verify_phc(&phc, "s3cret "));
    }
}
