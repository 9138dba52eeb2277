//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, read from the network.

/// Longest PLAIN message accepted (three fields of at most 255 bytes and two NULs).
pub const MESSAGE_BYTES_MAX: usize = 3 * 255 + 2;

/// A PLAIN message's user and password.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainCredentials<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

/// Reads a PLAIN message. The authorization id, if given, must be the user itself:
/// Ferry does not let one user act as another.
pub fn parse(message: &[u8]) -> Result<PlainCredentials<'_>, String> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(format!(
            "a PLAIN message has at most {MESSAGE_BYTES_MAX} bytes, got {}",
            message.len()
        ));
    }
    let text = std::str::from_utf8(message).map_err(|_| "a PLAIN message must be UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a PLAIN message has three fields separated by NUL bytes".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("a PLAIN message needs a user and a password".into());
    }
    if user.len() > 255 || password.len() > 255 || authzid.len() > 255 {
        return Err("a PLAIN field has at most 255 bytes".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("a PLAIN authorization id must be empty or the user's own name".into());
    }
    Ok(PlainCredentials { user, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_fields() {
        assert_eq!(
            parse(b"\0alice\0s3cret").unwrap(),
            PlainCredentials {
                user: "alice",
                password: "s3cret"
            }
        );
        assert!(parse(b"alice\0alice\0pw").is_ok());
        assert!(parse(b"bob\0alice\0pw").is_err());
        assert!(parse(b"\0alice").is_err());
        assert!(parse(b"\0alice\0pw\0more").is_err());
        assert!(parse(b"\0\0pw").is_err());
        assert!(parse(b"\0al\xffice\0pw").is_err());
        assert!(parse(&vec![b'a'; 2000]).is_err());
    }
}
