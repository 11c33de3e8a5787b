//! The tests' SMTP server: the mail catcher in `ballast::devmail`, the one `ballast dev mail
//! serve` runs for people.

pub use ballast::devmail::*;
