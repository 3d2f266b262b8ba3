//! Permission bits, as in the original config: 1 = READ, 2 = WRITE, 4 = MANAGE.

use std::fmt;

/// A user's permission bit mask. Anonymous connections have [`Permissions::NONE`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission at all.
    pub const NONE: Self = Self(0);
    /// May subscribe to channels.
    pub const READ: Self = Self(1);
    /// May broadcast and send direct messages.
    pub const WRITE: Self = Self(2);
    /// Reserved for management actions; grants nothing today.
    pub const MANAGE: Self = Self(4);
    /// Every permission (7).
    pub const ALL: Self = Self(7);

    /// The mask from its bits, if they are within 0..=7.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits <= 7 { Some(Self(bits)) } else { None }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (Self::READ, "READ"),
            (Self::WRITE, "WRITE"),
            (Self::MANAGE, "MANAGE"),
        ]
        .into_iter()
        .filter(|(p, _)| self.contains(*p))
        .map(|(_, n)| n)
        .collect();
        if names.is_empty() {
            f.write_str("NONE")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}
