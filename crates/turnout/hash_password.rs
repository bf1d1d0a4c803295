//! `turnout hash-password`: the password is read from standard input (never from argv, which
//! every local user can read in /proc), hashed with argon2id at its recommended parameters
//! (19 MiB, 2 passes) and a random salt, and printed for a `[[auth]]` users file.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use argon2::password_hash::{PasswordHasher as _, SaltString};

/// The longest password taken.
const MAX_PASSWORD: usize = 1024;

/// Reads one line from stdin and prints its hash (exit 0), or says what is wrong (exit 2).
pub fn run() -> ExitCode {
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_PASSWORD as u64 + 2)
        .read_line(&mut line);
    let password = line.trim_end_matches(['\n', '\r']);
    let problem = match read {
        Err(e) => Some(format!("cannot read the password from standard input: {e}")),
        Ok(_) if password.is_empty() => {
            Some("no password on standard input (e.g. `turnout hash-password < file`)".into())
        }
        Ok(_) if password.len() > MAX_PASSWORD => {
            Some(format!("the password is over {MAX_PASSWORD} bytes"))
        }
        Ok(_) => None,
    };
    if let Some(p) = problem {
        return crate::exit::fail(2, &p);
    }
    match hash(password.as_bytes()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => crate::exit::fail(1, &e),
    }
}

/// An argon2id PHC string of `password`, salted from the system's random source.
pub fn hash(password: &[u8]) -> Result<String, String> {
    use std::io::Read as _;
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("cannot read /dev/urandom for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier as _;

    #[test]
    fn a_hash_verifies_its_password_only_and_salts_differ() {
        let a = super::hash(b"correct horse").expect("hash");
        let b = super::hash(b"correct horse").expect("hash");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        let parsed = argon2::PasswordHash::new(&a).expect("parses");
        let argon = argon2::Argon2::default();
        assert!(argon.verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon.verify_password(b"wrong horse", &parsed).is_err());
    }
}
