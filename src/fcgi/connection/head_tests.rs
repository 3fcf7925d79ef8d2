//! The request head buffer, its budgets, and the params scan.

use std::sync::Arc;

use bytes::BytesMut;

use super::*;
use crate::fcgi::codec::{Record, decode};
use crate::fcgi::listener::ParamsBudget;
use crate::render::InternalPaths;

fn records(b: &[u8]) -> Vec<Record> {
    let mut buf = BytesMut::from(b);
    let mut out = Vec::new();
    while let Some(r) = decode(&mut buf).unwrap() {
        out.push(r);
    }
    assert!(buf.is_empty());
    out
}

fn pairs_of(ps: &[(&str, &[u8])]) -> BytesMut {
    let mut b = BytesMut::new();
    for (n, v) in ps {
        codec::put_pair(&mut b, n.as_bytes(), v);
    }
    b
}

#[test]
fn small_params_are_framed_in_place_in_one_allocation() {
    let budget = Arc::new(ParamsBudget::new(1 << 20));
    let mut charge = Charge::new(&budget);
    let params = pairs_of(&[("SCRIPT_NAME", b"/a.php"), ("REQUEST_METHOD", b"GET")]);
    let mut head = Head::default();
    // Split mid-pair across records, as clients may.
    head.push(&params[..5], 1 << 20, &mut charge).unwrap();
    let cap = head.buf.capacity();
    head.push(&params[5..], 1 << 20, &mut charge).unwrap();
    assert_eq!(head.params(), &params[..]);
    head.frame(&mut charge).unwrap();
    assert!(head.buf.capacity() >= cap);
    assert_eq!(charge.bytes(), head.buf.capacity());
    assert_eq!(budget.used(), charge.bytes());
    let bytes = head.finish(true);
    let recs = records(&bytes);
    let kinds: Vec<_> = recs
        .iter()
        .map(|r| (r.kind, r.request_id, r.content.len()))
        .collect();
    assert_eq!(
        kinds,
        [
            (codec::BEGIN_REQUEST, 1, 8),
            (codec::PARAMS, 1, params.len()),
            (codec::PARAMS, 1, 0),
            (codec::STDIN, 1, 0)
        ]
    );
    assert_eq!(
        codec::parse_begin(&recs[0].content),
        Some((codec::ROLE_RESPONDER, codec::FLAG_KEEP_CONN))
    );
    drop(charge);
    assert_eq!(budget.used(), 0);
}

#[test]
fn empty_params_are_just_the_terminator() {
    let budget = Arc::new(ParamsBudget::new(1 << 20));
    let mut charge = Charge::new(&budget);
    let mut head = Head::default();
    head.frame(&mut charge).unwrap();
    let recs = records(&head.finish(false));
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[1].kind, recs[1].content.len()), (codec::PARAMS, 0));
}

#[test]
fn large_params_are_reframed_whole_pairs_per_record() {
    let budget = Arc::new(ParamsBudget::new(1 << 20));
    let mut charge = Charge::new(&budget);
    let big = vec![b'v'; 40_000];
    let params = pairs_of(&[("A", &big), ("B", &big), ("C", &big)]);
    let mut head = Head::default();
    for c in params.chunks(65535) {
        head.push(c, 1 << 20, &mut charge).unwrap();
    }
    head.frame(&mut charge).unwrap();
    assert_eq!(charge.bytes(), head.buf.capacity());
    let recs = records(&head.finish(true));
    assert_eq!(recs.len(), 1 + 3 + 1 + 1);
    let joined: Vec<u8> = recs[1..4].iter().flat_map(|r| r.content.to_vec()).collect();
    assert_eq!(joined, &params[..]);
}

#[test]
fn budgets_refuse_growth_and_give_it_back() {
    let budget = Arc::new(ParamsBudget::new(80_000));
    let chunk = vec![0u8; 30_000];
    // The connection's room.
    let mut a = Charge::new(&budget);
    let mut head = Head::default();
    assert_eq!(head.push(&chunk, 20_000, &mut a), Err(Over::Connection));
    assert_eq!(a.bytes(), 0);
    head.push(&chunk, 70_000, &mut a).unwrap();
    // Growth is clamped to the room, not doubled past it.
    head.push(&chunk, 70_000 - a.bytes(), &mut a).unwrap();
    assert!(a.bytes() <= 70_000, "{}", a.bytes());
    // The global budget.
    let mut b = Charge::new(&budget);
    let mut other = Head::default();
    assert_eq!(other.push(&chunk, 1 << 20, &mut b), Err(Over::Global));
    drop(a);
    other.push(&chunk, 1 << 20, &mut b).unwrap();
    assert_eq!(budget.used(), b.bytes());
}

#[test]
fn params_are_read_in_one_pass() {
    let params = pairs_of(&[
        ("REQUEST_METHOD", b"POST"),
        ("CONTENT_LENGTH", b" 12 "),
        ("SCRIPT_NAME", b"/x.php"),
    ]);
    let seen = read_params(&params).unwrap();
    assert_eq!(seen.method, b"POST");
    assert_eq!(content_length(seen.content_length), Ok(Some(12)));
    assert_eq!(content_length(b""), Ok(None));
    assert_eq!(content_length(b"0"), Ok(Some(0)));
    assert_eq!(content_length(b"-1"), Err(()));
    assert_eq!(content_length(b"\xff"), Err(()));
    assert!(read_params(&[4, 0x80, 0, 1, 0, b'N']).is_err());
}

#[test]
fn the_internal_token_is_found_in_any_name_or_value() {
    let p = InternalPaths::from_token(0xabc);
    let tok = p.prefix.as_bytes();
    let mut traversal = b"/a/..".to_vec();
    traversal.extend_from_slice(p.status.as_bytes());
    let cases: Vec<BytesMut> = vec![
        pairs_of(&[("SCRIPT_NAME", p.status.as_bytes())]),
        pairs_of(&[
            ("REDIRECT_URL", p.ping.as_bytes()),
            ("PATH_TRANSLATED", b"/x"),
        ]),
        pairs_of(&[("PATH_INFO", &traversal)]),
        pairs_of(&[("REQUEST_URI", tok)]),
        pairs_of(&[
            ("HTTP_X", b"a"),
            ("HTTP_Y", &[tok, b"?x".as_slice()].concat()),
        ]),
        pairs_of(&[(std::str::from_utf8(tok).unwrap(), b"")]),
    ];
    for c in &cases {
        assert!(p.found_in(c), "{c:?}");
    }
    let other = InternalPaths::from_token(0xabd);
    let clean = pairs_of(&[
        ("SCRIPT_NAME", b"/.tqsup-"),
        ("REQUEST_URI", other.status.as_bytes()),
    ]);
    assert!(!p.found_in(&clean));
}

#[test]
fn large_heads_leave_a_reserve_for_ordinary_ones() {
    let budget = Arc::new(ParamsBudget::new(800_000));
    let chunk = vec![0u8; 60_000];
    let mut big = Vec::new();
    // Large heads stop at 7/8 of the budget...
    loop {
        let mut c = Charge::new(&budget);
        let mut h = Head::default();
        match h.push(&chunk, 1 << 20, &mut c) {
            Ok(()) => big.push((h, c)),
            Err(e) => {
                assert_eq!(e, Over::Global);
                break;
            }
        }
    }
    assert!(budget.used() <= 700_000, "{}", budget.used());
    // ...while ordinary ones still fit.
    let mut c = Charge::new(&budget);
    let mut h = Head::default();
    h.push(&[0u8; 2000], 1 << 20, &mut c).unwrap();
}
