//! Fuzzes the FastCGI codec: record decoding over arbitrary splits,
//! name-value pairs and the PARAMS re-framer must never panic, and whatever
//! the re-framer accepts must decode back to the same pairs.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tqsup::fcgi::codec;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize;
    let data = data.get(1..).unwrap_or(&[]);
    let (a, b) = data.split_at(split.min(data.len()));
    let mut buf = BytesMut::from(a);
    while let Ok(Some(_)) = codec::decode(&mut buf) {}
    buf.extend_from_slice(b);
    loop {
        match codec::decode(&mut buf) {
            Ok(Some(r)) => assert!(r.content.len() <= codec::MAX_CONTENT),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let pairs: Result<Vec<_>, _> = codec::pairs(data).collect();
    let mut out = BytesMut::new();
    if codec::reframe_params(&mut out, 1, data).is_ok() {
        let pairs = pairs.expect("re-framer accepted bad pairs");
        let mut joined = Vec::new();
        while let Some(r) = codec::decode(&mut out).expect("re-framed output decodes") {
            assert!(codec::pairs(&r.content).all(|p| p.is_ok()), "whole pairs per record");
            joined.extend_from_slice(&r.content);
        }
        let again: Vec<_> = codec::pairs(&joined).collect::<Result<_, _>>().unwrap();
        assert_eq!(again, pairs);
    }
});
