//! Actions and instructions to and from the data path's `Action`s. One
//! table: APPLY_ACTIONS and CLEAR_ACTIONS are taken, every other
//! instruction is UNSUP_INST; actions the data path lacks are BAD_TYPE.
use dataplane::flow::Action;

use super::oxm::{read_tlv, write_tlv, ETH_DST, ETH_SRC, VLAN_VID};
use super::wire::{err, OfError, Reader, Res, Writer};

pub const OFPP_MAX: u32 = 0xffff_ff00;
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
pub const OFPP_TABLE: u32 = 0xffff_fff9;
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
pub const OFPP_ALL: u32 = 0xffff_fffc;
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
pub const OFPP_ANY: u32 = 0xffff_ffff;

const OUTPUT: u16 = 0;
const PUSH_VLAN: u16 = 17;
const POP_VLAN: u16 = 18;
const SET_FIELD: u16 = 25;

const INST_APPLY: u16 = 4;
const INST_CLEAR: u16 = 5;

/// At most this many actions in a list.
pub const MAX_ACTIONS: usize = 64;

fn output(port: u32, max_len: u16) -> Res<Action> {
    Ok(match port {
        OFPP_IN_PORT => Action::InPort,
        OFPP_TABLE => Action::Table,
        OFPP_NORMAL => Action::Normal,
        OFPP_FLOOD => Action::Flood,
        OFPP_ALL => Action::All,
        OFPP_CONTROLLER => Action::Controller(max_len),
        1..=0xffff => Action::Output(port as u16),
        _ => return Err(err::BAD_OUT_PORT),
    })
}

fn set_field(body: &[u8]) -> Res<Action> {
    let mut r = Reader::with_short(body, err::BAD_SET_LEN);
    let t = read_tlv(&mut r).map_err(|e| if e == err::BAD_FIELD { err::BAD_SET_TYPE } else { err::BAD_SET_LEN })?;
    // What is left is padding.
    if t.has_mask || r.len() >= 8 || r.rest().iter().any(|&b| b != 0) {
        return Err(err::BAD_ARGUMENT);
    }
    let mac = || -> Res<[u8; 6]> { t.body.try_into().map_err(|_| err::BAD_SET_LEN) };
    Ok(match t.field {
        ETH_DST => Action::SetEthDst(mac()?),
        ETH_SRC => Action::SetEthSrc(mac()?),
        VLAN_VID => {
            let v: [u8; 2] = t.body.try_into().map_err(|_| err::BAD_SET_LEN)?;
            Action::SetVlanVid(u16::from_be_bytes(v) & 0x0fff)
        }
        _ => return Err(err::BAD_SET_TYPE),
    })
}

/// The next action or instruction: its type, whole length and body. A
/// length under 8, not a multiple of 8, or past the end is `bad_len`.
fn next<'a>(r: &mut Reader<'a>, bad_len: OfError) -> Res<(u16, usize, Reader<'a>)> {
    let kind = r.u16().map_err(|_| bad_len)?;
    let len = r.u16().map_err(|_| bad_len)? as usize;
    if len < 8 || !len.is_multiple_of(8) {
        return Err(bad_len);
    }
    Ok((kind, len, Reader::with_short(r.bytes(len - 4).map_err(|_| bad_len)?, bad_len)))
}

/// An action list (what fills `r`).
pub fn read_actions(r: &mut Reader) -> Res<Vec<Action>> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let (kind, len, mut body) = next(r, err::BAD_ACTION_LEN)?;
        let a = match kind {
            OUTPUT if len == 16 => output(body.u32()?, body.u16()?)?,
            PUSH_VLAN if len == 8 => match body.u16()? {
                0x8100 => Action::PushVlan,
                _ => return Err(err::BAD_ARGUMENT),
            },
            POP_VLAN if len == 8 => Action::PopVlan,
            OUTPUT | PUSH_VLAN | POP_VLAN => return Err(err::BAD_ACTION_LEN),
            SET_FIELD => set_field(body.rest())?,
            _ => return Err(err::BAD_ACTION_TYPE),
        };
        if out.len() == MAX_ACTIONS {
            return Err(err::TOO_MANY_ACTIONS);
        }
        out.push(a);
    }
    Ok(out)
}

pub fn write_actions(w: &mut Writer, actions: &[Action]) {
    for &a in actions {
        let (port, max_len) = match a {
            Action::Output(p) => (u32::from(p), 0),
            Action::InPort => (OFPP_IN_PORT, 0),
            Action::Table => (OFPP_TABLE, 0),
            Action::Normal => (OFPP_NORMAL, 0),
            Action::Flood => (OFPP_FLOOD, 0),
            Action::All => (OFPP_ALL, 0),
            Action::Controller(n) => (OFPP_CONTROLLER, n),
            Action::PushVlan => {
                w.u16(PUSH_VLAN).u16(8).u16(0x8100).zeros(2);
                continue;
            }
            Action::PopVlan => {
                w.u16(POP_VLAN).u16(8).zeros(4);
                continue;
            }
            Action::SetEthDst(m) | Action::SetEthSrc(m) => {
                let field = if matches!(a, Action::SetEthDst(_)) { ETH_DST } else { ETH_SRC };
                set_field_tlv(w, field, &m);
                continue;
            }
            Action::SetVlanVid(v) => {
                set_field_tlv(w, VLAN_VID, &(v | 0x1000).to_be_bytes());
                continue;
            }
        };
        w.u16(OUTPUT).u16(16).u32(port).u16(max_len).zeros(6);
    }
}

fn set_field_tlv(w: &mut Writer, field: u8, v: &[u8]) {
    let start = w.len();
    w.u16(SET_FIELD).u16(0);
    write_tlv(w, field, v, None);
    w.pad8(start);
    let len = w.len() - start;
    w.patch_u16(start + 2, len as u16);
}

/// A flow's instructions as the actions they apply (an empty list drops).
pub fn read_instructions(r: &mut Reader) -> Res<Vec<Action>> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let (kind, _, mut body) = next(r, err::BAD_INST_LEN)?;
        match kind {
            INST_APPLY => {
                body.skip(4)?;
                out.extend(read_actions(&mut body)?);
            }
            INST_CLEAR => {}
            _ => return Err(err::UNSUP_INST),
        }
    }
    if out.len() > MAX_ACTIONS {
        return Err(err::TOO_MANY_ACTIONS);
    }
    Ok(out)
}

pub fn write_instructions(w: &mut Writer, actions: &[Action]) {
    if actions.is_empty() {
        return;
    }
    let start = w.len();
    w.u16(INST_APPLY).u16(0).zeros(4);
    write_actions(w, actions);
    let len = w.len() - start;
    w.patch_u16(start + 2, len as u16);
}

/// Flow-table actions only: TABLE is for PACKET_OUT.
pub fn check_flow_actions(actions: &[Action]) -> Result<(), OfError> {
    if actions.contains(&Action::Table) {
        return Err(err::BAD_OUT_PORT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 12] = [
        Action::Output(7),
        Action::InPort,
        Action::Table,
        Action::Normal,
        Action::Flood,
        Action::All,
        Action::Controller(0xffff),
        Action::PushVlan,
        Action::PopVlan,
        Action::SetEthSrc([2, 0, 0, 0, 0, 1]),
        Action::SetEthDst([2, 0, 0, 0, 0, 2]),
        Action::SetVlanVid(10),
    ];

    #[test]
    fn actions_and_instructions_round_trip() {
        let mut w = Writer::default();
        write_actions(&mut w, &ALL);
        assert_eq!(w.len() % 8, 0);
        assert_eq!(read_actions(&mut Reader::new(&w.0)).unwrap(), ALL);
        let mut w = Writer::default();
        write_instructions(&mut w, &ALL);
        assert_eq!(read_instructions(&mut Reader::new(&w.0)).unwrap(), ALL);
        let mut w = Writer::default();
        write_instructions(&mut w, &[]);
        assert!(w.is_empty(), "drop: no instruction");
    }

    #[test]
    fn bad_actions_are_errors() {
        let read = |b: &[u8]| read_actions(&mut Reader::new(b));
        // Lengths: under the header, not a multiple of 8, past the end, wrong for the type.
        assert_eq!(read(&[0, 0, 0, 4]), Err(err::BAD_ACTION_LEN));
        assert_eq!(read(&[0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0]), Err(err::BAD_ACTION_LEN));
        assert_eq!(read(&[0, 0, 0, 16, 0, 0, 0, 1]), Err(err::BAD_ACTION_LEN));
        assert_eq!(read(&[0, 18, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(err::BAD_ACTION_LEN));
        assert_eq!(read(&[0, 0]), Err(err::BAD_ACTION_LEN));
        // Unknown type, output to port 0 or LOCAL, a service tag, an unsettable field.
        assert_eq!(read(&[0, 99, 0, 8, 0, 0, 0, 0]), Err(err::BAD_ACTION_TYPE));
        assert_eq!(read(&[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(err::BAD_OUT_PORT));
        assert_eq!(read(&[0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0]), Err(err::BAD_OUT_PORT));
        assert_eq!(read(&[0, 17, 0, 8, 0x88, 0xa8, 0, 0]), Err(err::BAD_ARGUMENT));
        assert_eq!(read(&[0, 25, 0, 16, 0x80, 0, 11 << 1, 4, 10, 0, 0, 1, 0, 0, 0, 0]), Err(err::BAD_SET_TYPE));
        assert_eq!(read(&[0, 25, 0, 8, 0x80, 0, 3 << 1, 6]), Err(err::BAD_SET_LEN));
        // Instructions: goto-table unsupported, a length that lies.
        let inst = |b: &[u8]| read_instructions(&mut Reader::new(b));
        assert_eq!(inst(&[0, 1, 0, 8, 1, 0, 0, 0]), Err(err::UNSUP_INST));
        assert_eq!(inst(&[0, 4, 0, 64, 0, 0, 0, 0]), Err(err::BAD_INST_LEN));
        assert_eq!(inst(&[0, 5, 0, 8, 0, 0, 0, 0]), Ok(vec![]));
        assert_eq!(check_flow_actions(&[Action::Table]), Err(err::BAD_OUT_PORT));
    }
}
