//! The small parts of `[[auth]]`: Basic credentials decoded (and refused when malformed), a
//! Host's port stripped, IPv6 literals kept whole.

use super::basic::decode;
use super::strip_port;

#[test]
fn basic_credentials_decode_and_malformed_ones_do_not() {
    assert_eq!(
        decode(b"Basic YW5uOnNlY3JldA=="),
        Some((b"ann".to_vec(), b"secret".to_vec()))
    );
    // The scheme in any case; a password may hold colons.
    assert_eq!(
        decode(b"basic YW5uOmE6Yg=="),
        Some((b"ann".to_vec(), b"a:b".to_vec()))
    );
    for bad in [
        &b""[..],
        b"Basic",
        b"Basic ",
        b"Bearer YW5uOnNlY3JldA==",
        b"Basic !!!!",
        b"Basic YW5u", // "ann": no colon
        b"BasicYW5uOnNlY3JldA==",
    ] {
        assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_hosts_port_is_stripped() {
    assert_eq!(strip_port("shop.example.com"), "shop.example.com");
    assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
}
