//! Property and example tests for the codec.

use super::*;
use proptest::prelude::*;

fn frame(kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    let h = Header {
        kind,
        request_id: id,
        content_len: content.len() as u16,
        padding_len: padding,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0xAA, padding as usize));
    v
}

fn decode_all(buf: &mut BytesMut) -> Result<Vec<Record>, CodecError> {
    let mut out = Vec::new();
    while let Some(r) = decode(buf)? {
        out.push(r);
    }
    Ok(out)
}

fn arb_record() -> impl Strategy<Value = (u8, u16, Vec<u8>, u8)> {
    (
        1u8..=11,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..2000),
        any::<u8>(),
    )
}

fn arb_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let field = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..140),
        prop::collection::vec(any::<u8>(), 0..20000),
    ];
    prop::collection::vec((field.clone(), field), 0..40)
}

proptest! {
    #[test]
    fn records_round_trip_whatever_the_split(recs in prop::collection::vec(arb_record(), 1..8), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let wire: Vec<u8> = recs.iter().flat_map(|(k, id, c, p)| frame(*k, *id, c, *p)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for p in points {
            buf.extend_from_slice(&wire[at..p]);
            at = p;
            got.extend(decode_all(&mut buf).unwrap());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), recs.len());
        for (r, (k, id, c, _)) in got.iter().zip(&recs) {
            prop_assert_eq!(r.kind, *k);
            prop_assert_eq!(r.request_id, *id);
            prop_assert_eq!(&r.content[..], &c[..]);
        }
    }

    #[test]
    fn pairs_round_trip(ps in arb_pairs()) {
        let mut buf = BytesMut::new();
        for (n, v) in &ps {
            put_pair(&mut buf, n, v);
            }
        let expect: usize = ps.iter().map(|(n, v)| pair_len(n, v)).sum();
        prop_assert_eq!(buf.len(), expect);
        let got: Vec<_> = pairs(&buf).map(|p| p.unwrap()).map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(got, ps);
    }

    #[test]
    fn reframed_params_keep_whole_pairs(ps in arb_pairs()) {
        let mut params = BytesMut::new();
        for (n, v) in &ps {
            put_pair(&mut params, n, v);
        }
        let mut out = BytesMut::new();
        reframe_params(&mut out, 1, &params).unwrap();
        let recs = decode_all(&mut out).unwrap();
        prop_assert!(out.is_empty());
        // Always ends with the empty terminator, and only there.
        prop_assert!(recs.last().unwrap().content.is_empty());
        let mut joined = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            prop_assert_eq!(r.kind, PARAMS);
            prop_assert_eq!(r.request_id, 1);
            prop_assert!(r.content.len() <= MAX_CONTENT);
            prop_assert_eq!(r.content.is_empty(), i + 1 == recs.len());
            // Each record parses on its own into whole pairs.
            for p in pairs(&r.content) {
                prop_assert!(p.is_ok());
            }
            joined.extend_from_slice(&r.content);
        }
        prop_assert_eq!(&joined[..], &params[..]);
    }

    #[test]
    fn decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        let _ = decode_all(&mut buf);
        let _ = pairs(&data).count();
    }
}

#[test]
fn padding_is_skipped_and_partial_is_none() {
    let mut buf = BytesMut::from(&frame(STDIN, 3, b"abc", 5)[..]);
    buf.extend_from_slice(&frame(STDIN, 3, b"", 0)[..4]);
    let r = decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        (r.kind, r.request_id, &r.content[..]),
        (STDIN, 3, &b"abc"[..])
    );
    assert_eq!(decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 4);
}

#[test]
fn bad_version_is_an_error_from_the_first_byte() {
    let mut buf = BytesMut::from(&[2u8][..]);
    assert_eq!(decode(&mut buf), Err(CodecError::BadVersion(2)));
    let mut f = frame(STDIN, 1, b"x", 0);
    f[0] = 0;
    assert_eq!(
        decode(&mut BytesMut::from(&f[..])),
        Err(CodecError::BadVersion(0))
    );
}

#[test]
fn four_byte_lengths_and_bad_lengths() {
    let mut buf = BytesMut::new();
    let long = vec![b'v'; 300];
    put_pair(&mut buf, b"NAME", &long);
    assert_eq!(&buf[..5], &[4, 0x80, 0, 1, 44]);
    let got: Vec<_> = pairs(&buf).collect();
    assert_eq!(got, vec![Ok((&b"NAME"[..], &long[..]))]);
    // A value length past the end of the data.
    let bad = [4u8, 0x80, 0, 1, 45, b'N', b'A', b'M', b'E'];
    assert_eq!(pairs(&bad).last(), Some(Err(CodecError::BadPairLength)));
    let mut out = BytesMut::new();
    assert!(reframe_params(&mut out, 1, &bad).is_err());
    // Truncated 4-byte length.
    assert_eq!(
        pairs(&[0x80, 0]).next(),
        Some(Err(CodecError::BadPairLength))
    );
}

#[test]
fn a_pair_too_large_for_one_record_is_refused() {
    let mut params = BytesMut::new();
    put_pair(&mut params, b"A", b"1");
    put_pair(&mut params, b"BIG", &vec![b'x'; 70_000]);
    let mut out = BytesMut::new();
    assert_eq!(
        reframe_params(&mut out, 1, &params),
        Err(ReframeError::PairTooLarge(70_000 + 3 + 1 + 4))
    );
}

#[test]
fn small_params_go_in_one_record_plus_terminator() {
    let mut params = BytesMut::new();
    put_pair(&mut params, b"SCRIPT_NAME", b"/a.php");
    let mut out = BytesMut::new();
    reframe_params(&mut out, 7, &params).unwrap();
    let recs = decode_all(&mut out).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(&recs[0].content[..], &params[..]);
    assert_eq!(recs[1].request_id, 7);
}

#[test]
fn helpers_encode_what_the_spec_says() {
    let mut out = BytesMut::new();
    encode_begin(&mut out, 9, ROLE_RESPONDER, FLAG_KEEP_CONN);
    encode_end(&mut out, 9, 1, UNKNOWN_ROLE);
    encode_unknown_type(&mut out, 42);
    let recs = decode_all(&mut out).unwrap();
    assert_eq!(
        parse_begin(&recs[0].content),
        Some((ROLE_RESPONDER, FLAG_KEEP_CONN))
    );
    assert_eq!(end_protocol_status(&recs[1].content), Some(UNKNOWN_ROLE));
    assert_eq!(&recs[1].content[..4], &[0, 0, 0, 1]);
    assert_eq!(
        (recs[2].kind, recs[2].request_id, recs[2].content[0]),
        (UNKNOWN_TYPE, 0, 42)
    );
    assert_eq!(parse_begin(&[0; 9]), None);
    let mut f = frame(STDOUT, 1, b"x", 0);
    set_request_id(&mut f, 0x1234);
    assert_eq!(Header::parse(&f).unwrap().request_id, 0x1234);
}

#[test]
fn encode_never_writes_a_truncated_length() {
    // 200_000 bytes would be 3392 with `as u16`: split into whole records.
    let content: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let mut out = BytesMut::new();
    encode(&mut out, STDOUT, 3, &content);
    encode_end(&mut out, 3, 0, REQUEST_COMPLETE);
    let recs = decode_all(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(recs.len(), 5);
    assert!(
        recs[..4]
            .iter()
            .all(|r| r.kind == STDOUT && r.content.len() <= MAX_CONTENT)
    );
    let joined: Vec<u8> = recs[..4].iter().flat_map(|r| r.content.to_vec()).collect();
    assert_eq!(joined, content);
    assert_eq!(recs[4].kind, END_REQUEST);
}

#[test]
#[should_panic(expected = "FastCGI record content of 65536 bytes")]
fn a_header_for_too_much_content_panics() {
    put_header(&mut BytesMut::new(), STDOUT, 1, MAX_CONTENT + 1);
}

#[test]
fn begin_record_in_place_is_encode_begin() {
    let mut out = BytesMut::new();
    encode_begin(&mut out, 0x0102, ROLE_RESPONDER, FLAG_KEEP_CONN);
    assert_eq!(
        &out[..],
        &begin_record(0x0102, ROLE_RESPONDER, FLAG_KEEP_CONN)[..]
    );
    assert_eq!(&out[..], &[1, 1, 1, 2, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
}
