//! OpenFlow 1.3: the wire format (`wire`, `oxm`, `action`, `msg`,
//! `multipart`), the connections to controllers and tools (`conn`), and
//! the agent that answers them and keeps the flow table (`agent`).
//!
//! No crate on crates.io speaks the switch side of OpenFlow 1.3 (rust_ofp
//! is 1.0 and a controller; rovs-openflow drives OVS as a client), so the
//! codec is here: the messages the switch takes and sends, each decoded
//! from bytes it never trusts.
use std::io::Read;

pub mod action;
pub mod agent;
pub mod conn;
pub mod flows;
pub mod msg;
pub mod multipart;
pub mod oxm;
pub mod show;
pub mod wire;

pub use msg::{decode, encode, Header, Msg};
pub use wire::OfError;

/// One message off a stream: its header and body. An error of the stream,
/// or a header that cannot be (a length under the header's own), ends the
/// connection; a length longer than what is sent waits for the rest and
/// so ends with the peer or its read timeout.
pub fn read_message(r: &mut impl Read) -> std::io::Result<(Header, Vec<u8>)> {
    let mut h = [0u8; msg::HEADER];
    r.read_exact(&mut h)?;
    let h = Header::parse(&h);
    let len = usize::from(h.length);
    if len < msg::HEADER {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("OpenFlow length {len} under the header's")));
    }
    let mut body = vec![0u8; len - msg::HEADER];
    r.read_exact(&mut body)?;
    Ok((h, body))
}

#[cfg(test)]
mod tests;
