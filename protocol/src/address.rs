//! Addresses: who a message is from and to.
//!
//! | form | kind | example |
//! |---|---|---|
//! | `local@domain` | [`AddressKind::Account`]: a user, or a department line | `alice@example.org`, `sales@example.org` |
//! | `local@domain/device` | [`AddressKind::Device`]: one device of a user | `alice@example.org/laptop` |
//! | `@domain` | [`AddressKind::OrgLine`]: an organisation's main line | `@example.org` |
//! | `#name` or `#name@domain` | [`AddressKind::Group`]: a group on this hub, or on the hub serving `domain` | `#climbing`, `#climbing@example.org` |
//!
//! Users and department lines share one namespace per domain (like mailboxes), so their text
//! form is the same; which one an account address names is known only to the hub that serves the
//! domain. Parsing lower-cases ASCII letters and refuses anything else outside the allowed sets,
//! so two addresses are equal exactly when their canonical text is.

use std::{fmt, str::FromStr};

/// The longest address, in bytes, that parses.
pub const MAX_ADDRESS_LEN: usize = 400;
const MAX_LOCAL_LEN: usize = 64;
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
const MAX_DEVICE_LEN: usize = 32;
const MAX_GROUP_LEN: usize = 64;

/// What an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKind {
    /// A user or a department line: `local@domain`.
    Account,
    /// One device of a user: `local@domain/device`.
    Device,
    /// The main line of the organisation that holds a domain: `@domain`.
    OrgLine,
    /// A group: `#name` or `#name@domain`.
    Group,
}

/// Why a text is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The text is empty.
    #[error("address is empty")]
    Empty,
    /// The text is longer than [`MAX_ADDRESS_LEN`].
    #[error("address is {0} bytes long; the limit is {MAX_ADDRESS_LEN}")]
    TooLong(usize),
    /// The text holds a character outside printable ASCII (spaces included).
    #[error("address holds a space, a control character or a character outside ASCII")]
    InvalidCharacter,
    /// An account or device address has no `@`.
    #[error("address has no `@domain` part")]
    MissingDomain,
    /// The part before `@` is empty, too long, or holds a character outside `a-z 0-9 . _ + -`,
    /// or starts, ends or doubles a dot.
    #[error("invalid local part `{0}`")]
    InvalidLocalPart(String),
    /// The domain is empty, too long, or has a label that is empty, longer than 63 bytes, holds
    /// a character outside `a-z 0-9 -`, or starts or ends with `-`.
    #[error("invalid domain `{0}`")]
    InvalidDomain(String),
    /// The device name is empty, longer than 32 bytes, or holds a character outside
    /// `a-z 0-9 _ -`.
    #[error("invalid device name `{0}`")]
    InvalidDevice(String),
    /// The group name is empty, longer than 64 bytes, or holds a character outside
    /// `a-z 0-9 . _ -`.
    #[error("invalid group name `{0}`")]
    InvalidGroup(String),
}

/// A parsed, canonical (lower-case) address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    text: Box<str>,
    kind: AddressKind,
    /// Byte offset of `@`, or the text length when there is none (a group without domain).
    at: u16,
    /// Byte offset of `/` for a device, else the text length.
    slash: u16,
}

impl Address {
    /// Parses and canonicalises an address.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong(text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AddressError::InvalidCharacter);
        }
        // Canonical text is lower case; most addresses already are, and then need no copy.
        let text = if text.bytes().any(|b| b.is_ascii_uppercase()) {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        let len = text.len() as u16; // bounded by MAX_ADDRESS_LEN above
        if let Some(rest) = text.strip_prefix('#') {
            let (name, domain) = match rest.split_once('@') {
                Some((name, domain)) => (name, Some(domain)),
                None => (rest, None),
            };
            check_group(name)?;
            if let Some(domain) = domain {
                check_domain(domain)?;
            }
            let at = text.find('@').map_or(len, |at| at as u16);
            return Ok(Self { kind: AddressKind::Group, at, slash: len, text: text.into() });
        }
        if let Some(domain) = text.strip_prefix('@') {
            check_domain(domain)?;
            return Ok(Self { kind: AddressKind::OrgLine, at: 0, slash: len, text: text.into() });
        }
        let at = text.find('@').ok_or(AddressError::MissingDomain)?;
        let (local, rest) = (&text[..at], &text[at + 1..]);
        check_local(local)?;
        let (domain, device) = match rest.split_once('/') {
            Some((domain, device)) => (domain, Some(device)),
            None => (rest, None),
        };
        check_domain(domain)?;
        let (kind, slash) = match device {
            Some(device) => {
                check_device(device)?;
                (AddressKind::Device, (at + 1 + domain.len()) as u16)
            }
            None => (AddressKind::Account, len),
        };
        Ok(Self { kind, at: at as u16, slash, text: text.into() })
    }

    /// What the address names.
    pub fn kind(&self) -> AddressKind {
        self.kind
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The domain, if the address has one (every kind but a group without `@domain`).
    pub fn domain(&self) -> Option<&str> {
        let at = usize::from(self.at);
        (at < self.text.len()).then(|| &self.text[at + 1..usize::from(self.slash)])
    }

    /// The part before `@` of an account or device address, or a group's name.
    pub fn local(&self) -> Option<&str> {
        match self.kind {
            AddressKind::Account | AddressKind::Device => Some(&self.text[..usize::from(self.at)]),
            AddressKind::Group => Some(&self.text[1..usize::from(self.at)]),
            AddressKind::OrgLine => None,
        }
    }

    /// The device name of a device address.
    pub fn device(&self) -> Option<&str> {
        (self.kind == AddressKind::Device).then(|| &self.text[usize::from(self.slash) + 1..])
    }

    /// The account a device belongs to; an account address is its own account; other kinds
    /// have none.
    pub fn account(&self) -> Option<Address> {
        match self.kind {
            AddressKind::Account => Some(self.clone()),
            AddressKind::Device => Some(Self {
                text: self.text[..usize::from(self.slash)].into(),
                kind: AddressKind::Account,
                at: self.at,
                slash: self.slash,
            }),
            AddressKind::OrgLine | AddressKind::Group => None,
        }
    }

    /// The address of device `device` of this account.
    pub fn with_device(&self, device: &str) -> Result<Address, AddressError> {
        match self.kind {
            AddressKind::Account => Address::parse(&format!("{}/{device}", self.text)),
            _ => Err(AddressError::InvalidDevice(device.to_owned())),
        }
    }
}

fn check_local(local: &str) -> Result<(), AddressError> {
    let valid = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    valid.then_some(()).ok_or_else(|| AddressError::InvalidLocalPart(local.to_owned()))
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let valid =
        !domain.is_empty() && domain.len() <= MAX_DOMAIN_LEN && domain.split('.').all(label_ok);
    valid.then_some(()).ok_or_else(|| AddressError::InvalidDomain(domain.to_owned()))
}

fn check_device(device: &str) -> Result<(), AddressError> {
    let valid = !device.is_empty()
        && device.len() <= MAX_DEVICE_LEN
        && device.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    valid.then_some(()).ok_or_else(|| AddressError::InvalidDevice(device.to_owned()))
}

fn check_group(name: &str) -> Result<(), AddressError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_GROUP_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    valid.then_some(()).ok_or_else(|| AddressError::InvalidGroup(name.to_owned()))
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    #[test]
    fn user_address_parses_as_account_with_local_and_domain() {
        let a = parse("alice@example.org");
        assert_eq!(a.kind(), AddressKind::Account);
        assert_eq!(a.local(), Some("alice"));
        assert_eq!(a.domain(), Some("example.org"));
        assert_eq!(a.device(), None);
        assert_eq!(a.account().unwrap(), a);
    }

    #[test]
    fn device_address_names_its_account_and_device() {
        let d = parse("alice@example.org/laptop-2");
        assert_eq!(d.kind(), AddressKind::Device);
        assert_eq!(d.device(), Some("laptop-2"));
        assert_eq!(d.domain(), Some("example.org"));
        assert_eq!(d.account().unwrap(), parse("alice@example.org"));
        assert_eq!(parse("alice@example.org").with_device("laptop-2").unwrap(), d);
    }

    #[test]
    fn org_line_and_groups_parse_with_their_kind() {
        let org = parse("@example.org");
        assert_eq!(org.kind(), AddressKind::OrgLine);
        assert_eq!(org.domain(), Some("example.org"));
        assert_eq!(org.local(), None);
        let g = parse("#climbing");
        assert_eq!(g.kind(), AddressKind::Group);
        assert_eq!(g.local(), Some("climbing"));
        assert_eq!(g.domain(), None);
        let remote = parse("#climbing@example.net");
        assert_eq!(remote.local(), Some("climbing"));
        assert_eq!(remote.domain(), Some("example.net"));
        assert_eq!(g.account(), None);
    }

    #[test]
    fn parsing_lowercases_so_equal_addresses_compare_equal() {
        assert_eq!(parse("Alice@Example.ORG"), parse("alice@example.org"));
        assert_eq!(parse("Alice@Example.ORG").as_str(), "alice@example.org");
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_reason() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("alice", MissingDomain),
            ("@", InvalidDomain(String::new())),
            ("@example..org", InvalidDomain("example..org".into())),
            ("alice@-example.org", InvalidDomain("-example.org".into())),
            ("alice@exa_mple.org", InvalidDomain("exa_mple.org".into())),
            ("@example.org/x", InvalidDomain("example.org/x".into())),
            (".alice@example.org", InvalidLocalPart(".alice".into())),
            ("al..ice@example.org", InvalidLocalPart("al..ice".into())),
            ("al@ice@example.org", InvalidDomain("ice@example.org".into())),
            ("alice@example.org/", InvalidDevice(String::new())),
            ("alice@example.org/lap.top", InvalidDevice("lap.top".into())),
            ("alice@example.org/a/b", InvalidDevice("a/b".into())),
            ("#", InvalidGroup(String::new())),
            ("#a b", InvalidCharacter),
            ("#a+b", InvalidGroup("a+b".into())),
            ("älice@example.org", InvalidCharacter),
        ];
        for (text, expected) in cases {
            assert_eq!(Address::parse(text).as_ref(), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn length_limits_are_enforced() {
        let local = "a".repeat(MAX_LOCAL_LEN + 1);
        assert!(matches!(
            Address::parse(&format!("{local}@example.org")),
            Err(AddressError::InvalidLocalPart(_))
        ));
        let label = "a".repeat(MAX_LABEL_LEN + 1);
        assert!(matches!(
            Address::parse(&format!("a@{label}.org")),
            Err(AddressError::InvalidDomain(_))
        ));
        let long = format!("a@{}", "a.".repeat(MAX_ADDRESS_LEN));
        assert_eq!(Address::parse(&long), Err(AddressError::TooLong(long.len())));
        let device = "d".repeat(MAX_DEVICE_LEN + 1);
        assert!(matches!(
            Address::parse(&format!("a@b.c/{device}")),
            Err(AddressError::InvalidDevice(_))
        ));
    }
}
