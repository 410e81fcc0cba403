//! AMF0 (Adobe Action Message Format 0, 2007) values: what RTMP commands and metadata are made of.

use bytes::{BufMut, BytesMut};

/// Markers (AMF0 §2.1).
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const XML_DOCUMENT: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
}

/// Nesting beyond this is refused (a hostile peer could otherwise recurse us off the stack).
pub const MAX_DEPTH: usize = 16;
/// Most properties or elements in one object/array.
pub const MAX_ELEMENTS: usize = 4096;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// number
    Number(f64),
    /// boolean
    Boolean(bool),
    /// string or long string
    String(String),
    /// anonymous or typed object (the class name is dropped)
    Object(Vec<(String, Amf0Value)>),
    /// null
    Null,
    /// undefined (also stands for unsupported)
    Undefined,
    /// ECMA array (associative)
    EcmaArray(Vec<(String, Amf0Value)>),
    /// strict array
    StrictArray(Vec<Amf0Value>),
    /// date: milliseconds since the epoch (time zone dropped)
    Date(f64),
}

impl Amf0Value {
    /// The property `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string inside, if any.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number inside, if any.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Shorthand for an object from `(&str, value)` pairs.
    pub fn object<const N: usize>(props: [(&str, Amf0Value); N]) -> Self {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Shorthand for a string value.
    pub fn string(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

/// Decoding errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Amf0Error {
    /// Input ended inside a value.
    #[error("truncated AMF0 value")]
    Truncated,
    /// A marker we do not know or do not accept.
    #[error("unsupported AMF0 marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// Strings must be UTF-8.
    #[error("AMF0 string is not UTF-8")]
    BadUtf8,
    /// Nesting or element count over the limits.
    #[error("AMF0 value too deep or too large")]
    TooComplex,
}

/// Decodes every value in `data`.
pub fn decode_all(mut data: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut out = Vec::new();
    while !data.is_empty() {
        out.push(decode(&mut data, 0)?);
        if out.len() > MAX_ELEMENTS {
            return Err(Amf0Error::TooComplex);
        }
    }
    Ok(out)
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], Amf0Error> {
    if data.len() < n {
        return Err(Amf0Error::Truncated);
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn read_u16(data: &mut &[u8]) -> Result<usize, Amf0Error> {
    let b = take(data, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn read_u32(data: &mut &[u8]) -> Result<usize, Amf0Error> {
    let b = take(data, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn read_f64(data: &mut &[u8]) -> Result<f64, Amf0Error> {
    let b = take(data, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_be_bytes(a))
}

fn read_utf8(data: &mut &[u8], len: usize) -> Result<String, Amf0Error> {
    let b = take(data, len)?;
    String::from_utf8(b.to_vec()).map_err(|_| Amf0Error::BadUtf8)
}

fn read_props(data: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
    let mut props = Vec::new();
    loop {
        let len = read_u16(data)?;
        if len == 0 {
            match data.first() {
                Some(&marker::OBJECT_END) => {
                    *data = &data[1..];
                    return Ok(props);
                }
                None => return Err(Amf0Error::Truncated),
                // An empty key followed by a value: tolerated.
                Some(_) => {}
            }
        }
        let key = read_utf8(data, len)?;
        let value = decode(data, depth + 1)?;
        props.push((key, value));
        if props.len() > MAX_ELEMENTS {
            return Err(Amf0Error::TooComplex);
        }
    }
}

/// Decodes one value from the front of `data`, advancing it.
pub fn decode(data: &mut &[u8], depth: usize) -> Result<Amf0Value, Amf0Error> {
    if depth > MAX_DEPTH {
        return Err(Amf0Error::TooComplex);
    }
    let m = take(data, 1)?[0];
    Ok(match m {
        marker::NUMBER => Amf0Value::Number(read_f64(data)?),
        marker::BOOLEAN => Amf0Value::Boolean(take(data, 1)?[0] != 0),
        marker::STRING => {
            let len = read_u16(data)?;
            Amf0Value::String(read_utf8(data, len)?)
        }
        marker::LONG_STRING | marker::XML_DOCUMENT => {
            let len = read_u32(data)?;
            Amf0Value::String(read_utf8(data, len)?)
        }
        marker::OBJECT => Amf0Value::Object(read_props(data, depth)?),
        marker::TYPED_OBJECT => {
            let len = read_u16(data)?;
            let _class = read_utf8(data, len)?;
            Amf0Value::Object(read_props(data, depth)?)
        }
        marker::NULL => Amf0Value::Null,
        marker::UNDEFINED | marker::UNSUPPORTED => Amf0Value::Undefined,
        marker::ECMA_ARRAY => {
            let _count = read_u32(data)?; // advisory only; the end marker terminates
            Amf0Value::EcmaArray(read_props(data, depth)?)
        }
        marker::STRICT_ARRAY => {
            let count = read_u32(data)?;
            if count > MAX_ELEMENTS {
                return Err(Amf0Error::TooComplex);
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(decode(data, depth + 1)?);
            }
            Amf0Value::StrictArray(items)
        }
        marker::DATE => {
            let ms = read_f64(data)?;
            take(data, 2)?;
            Amf0Value::Date(ms)
        }
        other => return Err(Amf0Error::UnsupportedMarker(other)),
    })
}

fn put_key(out: &mut BytesMut, k: &str) {
    let k = &k.as_bytes()[..k.len().min(0xffff)];
    out.put_u16(k.len() as u16);
    out.put_slice(k);
}

/// Appends the encoding of `v`.
pub fn encode(out: &mut BytesMut, v: &Amf0Value) {
    match v {
        Amf0Value::Number(n) => {
            out.put_u8(marker::NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(marker::BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) if s.len() <= 0xffff => {
            out.put_u8(marker::STRING);
            put_key(out, s);
        }
        Amf0Value::String(s) => {
            out.put_u8(marker::LONG_STRING);
            out.put_u32(s.len() as u32);
            out.put_slice(s.as_bytes());
        }
        Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
            if matches!(v, Amf0Value::Object(_)) {
                out.put_u8(marker::OBJECT);
            } else {
                out.put_u8(marker::ECMA_ARRAY);
                out.put_u32(props.len() as u32);
            }
            for (k, v) in props {
                put_key(out, k);
                encode(out, v);
            }
            out.put_slice(&[0, 0, marker::OBJECT_END]);
        }
        Amf0Value::Null => out.put_u8(marker::NULL),
        Amf0Value::Undefined => out.put_u8(marker::UNDEFINED),
        Amf0Value::StrictArray(items) => {
            out.put_u8(marker::STRICT_ARRAY);
            out.put_u32(items.len() as u32);
            for i in items {
                encode(out, i);
            }
        }
        Amf0Value::Date(ms) => {
            out.put_u8(marker::DATE);
            out.put_f64(*ms);
            out.put_u16(0);
        }
    }
}

/// Encodes a sequence of values.
pub fn encode_all(values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode(&mut out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_command_vector() {
        // "connect", 1.0, {app: "live"}
        let bytes: &[u8] = &[
            0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't', //
            0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, //
            0x03, 0x00, 0x03, b'a', b'p', b'p', 0x02, 0x00, 0x04, b'l', b'i', b'v', b'e', 0x00, 0x00, 0x09,
        ];
        let v = decode_all(bytes).unwrap();
        assert_eq!(v[0].as_str(), Some("connect"));
        assert_eq!(v[1].as_f64(), Some(1.0));
        assert_eq!(v[2].get("app").and_then(Amf0Value::as_str), Some("live"));
        assert_eq!(&encode_all(&v)[..], bytes);
    }

    #[test]
    fn round_trip_all_kinds() {
        let v = vec![
            Amf0Value::Number(-2.5),
            Amf0Value::Boolean(true),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
            Amf0Value::StrictArray(vec![Amf0Value::string("a"), Amf0Value::Number(1.0)]),
            Amf0Value::Date(1000.0),
            Amf0Value::String("x".repeat(70000)),
        ];
        assert_eq!(decode_all(&encode_all(&v)).unwrap(), v);
    }

    #[test]
    fn hostile_values() {
        assert_eq!(decode_all(&[0x02, 0x00, 0x05, b'a']), Err(Amf0Error::Truncated));
        assert_eq!(decode_all(&[0x02, 0x00, 0x01, 0xff]), Err(Amf0Error::BadUtf8));
        assert_eq!(decode_all(&[0x11]), Err(Amf0Error::UnsupportedMarker(0x11)));
        assert_eq!(decode_all(&[0x07, 0, 1]), Err(Amf0Error::UnsupportedMarker(0x07)));
        // A strict array claiming 4 billion elements allocates nothing.
        assert_eq!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]), Err(Amf0Error::TooComplex));
        // Deep nesting.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        assert_eq!(decode_all(&deep), Err(Amf0Error::TooComplex));
        // Object without end marker.
        assert_eq!(decode_all(&[0x03, 0x00, 0x01, b'a', 0x05]), Err(Amf0Error::Truncated));
    }
}
