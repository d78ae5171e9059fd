//! miniSEED decoding through libmseed (the `mseed` crate), record by record.
//!
//! We walk the byte buffer ourselves instead of using libmseed's file reader so that every
//! problem can be reported with the file name and byte offset, and so that one corrupt record
//! never costs the good records around it. Decoded records are joined into contiguous
//! [`Trace`]s the way ObsPy does: same channel, same rate, next record starting within half a
//! sample of where the previous one ended.

use std::fmt;
use std::path::Path;

use mseed::{MSRecord, MSSampleType};

use crate::stream::ChannelId;

/// Smallest number of bytes libmseed needs to recognise a record header.
const MIN_HEADER_BYTES: usize = 48;
/// Record lengths are multiples of this: where a record without blockette 1000 ends, the next
/// header is looked for on this grid from its start.
const RECORD_GRID: usize = 64;

/// One decoded data record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: ChannelId,
    /// Time of the first sample, ns since the epoch.
    pub start_ns: i64,
    pub sample_rate: f64,
    pub samples: Vec<f64>,
}

/// A contiguous run of samples of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub id: ChannelId,
    pub start_ns: i64,
    pub sample_rate: f64,
    pub samples: Vec<f64>,
}

impl Trace {
    /// Sample period in nanoseconds (fractional for rates like 125 Hz).
    pub fn period_ns(&self) -> f64 {
        1e9 / self.sample_rate
    }

    /// Time the sample after the last one would have.
    pub fn next_ns(&self) -> i64 {
        self.start_ns + (self.samples.len() as f64 * self.period_ns()).round() as i64
    }
}

/// Something wrong in the input that did not stop decoding: a corrupt or truncated record,
/// bytes that are not miniSEED. Always names the source and the byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeWarning {
    pub source: String,
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for DecodeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} @ byte {}: {}",
            self.source, self.offset, self.message
        )
    }
}

/// Why a whole input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{source_name}: cannot read file: {error}")]
    Io {
        source_name: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{source_name}: no decodable miniSEED data record ({first_problem})")]
    NoRecords {
        source_name: String,
        first_problem: String,
    },
}

/// What a buffer or file held: contiguous traces plus every problem met on the way.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub traces: Vec<Trace>,
    pub warnings: Vec<DecodeWarning>,
    pub records: usize,
}

/// libmseed reports details (which check failed, how many samples decoded) through its log, not
/// its return codes. We route that log into a per-thread buffer so the messages become part of
/// our warnings and errors, with file and offset, instead of loose lines on stderr.
mod libmseed_log {
    use std::cell::{Cell, RefCell};
    use std::ffi::{c_char, CStr};

    thread_local! {
        static MESSAGES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        static INSTALLED: Cell<bool> = const { Cell::new(false) };
    }

    unsafe extern "C" fn capture(message: *const c_char) {
        if message.is_null() {
            return;
        }
        // SAFETY: libmseed passes a NUL-terminated string valid for the duration of the call.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .trim()
            .to_string();
        if !text.is_empty() {
            MESSAGES.with(|m| m.borrow_mut().push(text));
        }
    }

    /// Installs the capture (libmseed keeps its log settings per thread) and clears this
    /// thread's buffer.
    pub fn start() {
        INSTALLED.with(|installed| {
            if !installed.get() {
                // SAFETY: registers plain function pointers in this thread's libmseed log
                // settings; null prefixes keep libmseed's defaults.
                unsafe {
                    libmseed_sys::ms_rloginit(
                        Some(capture),
                        std::ptr::null(),
                        Some(capture),
                        std::ptr::null(),
                        0,
                    )
                };
                installed.set(true);
            }
        });
        MESSAGES.with(|m| m.borrow_mut().clear());
    }

    /// Messages logged on this thread since [`start`].
    pub fn take() -> Vec<String> {
        MESSAGES.with(|m| std::mem::take(&mut *m.borrow_mut()))
    }
}

/// Decodes exactly one miniSEED record (2 or 3) and its samples.
pub fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    decode_record_logged(bytes).0
}

/// [`decode_record`] plus what libmseed logged about the record (warnings even on success).
pub fn decode_record_logged(bytes: &[u8]) -> (Result<Record, String>, Vec<String>) {
    libmseed_log::start();
    let result = decode_unlogged(bytes);
    let log = libmseed_log::take();
    match result {
        Err(reason) if !log.is_empty() => {
            (Err(format!("{reason} ({})", log.join("; "))), Vec::new())
        }
        // A failed Steim integrity check means the decoded samples cannot be trusted.
        Ok(_) if log.iter().any(|m| m.contains("integrity check")) => (
            Err(format!("corrupt compressed data: {}", log.join("; "))),
            Vec::new(),
        ),
        other => (other, log),
    }
}

/// Network, station, location and channel of an FDSN source identifier
/// (`FDSN:NET_STA_LOC_B_S_SS`), as libmseed's `ms_sid2nslc` splits it: the text after the last
/// `:`, exactly five `_`, and a channel of single-character band, source and subsource written
/// as the SEED channel (`HHZ`), else kept as it is. Done here rather than through `mseed`'s
/// `MSRecord::network()` and friends, which leak the identifier on every call (found by the
/// fuzzer: ~300 bytes per record, a windower's memory growing with uptime) and copy it into
/// 12-byte buffers without a length check.
fn nslc(sid: &str) -> Result<[String; 4], String> {
    let bad = || format!("unrecognised source identifier {sid:?}");
    let body = sid.strip_prefix("FDSN:").ok_or_else(bad)?;
    let body = body.rsplit(':').next().unwrap_or(body);
    let parts: Vec<&str> = body.split('_').collect();
    let [net, sta, loc, band, source, sub] = parts[..] else {
        return Err(bad());
    };
    let single = |p: &str| p.len() == 1; // bytes, as libmseed compares them
    let cha = if single(band) && single(source) && single(sub) {
        format!("{band}{source}{sub}")
    } else {
        format!("{band}_{source}_{sub}")
    };
    Ok([net.into(), sta.into(), loc.into(), cha])
}

/// libmseed's `MSSWAP_HEADER` bit of `MS3Record.swapflag`: the header was byte-swapped.
const SWAPPED_HEADER: u8 = 0x01;

/// Refuses a miniSEED 2 record whose fixed header puts the data outside the record, read with
/// the byte order libmseed's header parse settled on. libmseed (3.1.3) computes the data size as
/// record length minus that offset without checking it, and reads far past the buffer when it
/// unpacks: a crafted record would crash the process (found by the fuzzer).
fn check_data_offset(bytes: &[u8], reclen: usize, swapflag: u8) -> Result<(), String> {
    if bytes.len() < MIN_HEADER_BYTES {
        return Err(format!(
            "{} bytes, too short for a miniSEED 2 header",
            bytes.len()
        ));
    }
    let offset = header_u16(bytes, 44, swapflag & SWAPPED_HEADER == 0) as usize;
    if !(MIN_HEADER_BYTES..=reclen).contains(&offset) {
        return Err(format!(
            "data offset {offset} outside the {reclen}-byte record (48 to {reclen})"
        ));
    }
    Ok(())
}

/// Bytes per sample of the fixed-size encodings. libmseed's decoders for these read as many
/// samples as the header announces without looking at the data's size.
fn fixed_sample_bytes(encoding: u32) -> Option<usize> {
    use libmseed_sys as c;
    match encoding {
        c::DE_TEXT => Some(1),
        c::DE_INT16 | c::DE_GEOSCOPE163 | c::DE_GEOSCOPE164 | c::DE_CDSN | c::DE_SRO => Some(2),
        c::DE_DWWSSN => Some(2),
        c::DE_GEOSCOPE24 => Some(3),
        c::DE_INT32 | c::DE_FLOAT32 => Some(4),
        c::DE_FLOAT64 => Some(8),
        _ => None,
    }
}

/// Parses a record and unpacks its samples once the header's promises are checked against the
/// bytes. Calls libmseed directly: the `mseed` crate's `MSRecord::parse` leaks the record it
/// allocated whenever parsing fails (the fuzzer found it), and unpacks before anything can be
/// checked.
fn parse_record(bytes: &[u8]) -> Result<MSRecord, String> {
    let mut raw: *mut libmseed_sys::MS3Record = std::ptr::null_mut();
    // SAFETY: libmseed reads at most `bytes.len()` bytes and allocates the record into `raw`
    // (left null when it allocates nothing); `MSRecord` owns and frees it.
    let rc = unsafe {
        libmseed_sys::msr3_parse(bytes.as_ptr().cast(), bytes.len() as u64, &mut raw, 0, 0)
    };
    if raw.is_null() {
        return Err(format!("libmseed rejected the record (code {rc})"));
    }
    let mut msr = unsafe { MSRecord::from_raw(raw) };
    if rc != 0 {
        return Err(format!("libmseed rejected the record (code {rc})"));
    }
    // SAFETY: `raw` is the header libmseed parsed (samples still packed), owned by `msr`.
    let header = unsafe { *raw };
    if header.formatversion == 2 {
        check_data_offset(bytes, header.reclen.max(0) as usize, header.swapflag)?;
    }
    let (encoding, count) = (header.encoding, header.samplecnt);
    let (mut offset, mut size) = (0u32, 0u32);
    // SAFETY: as above, with the data offset checked.
    let bounds = unsafe { libmseed_sys::msr3_data_bounds(raw, &mut offset, &mut size) };
    if bounds != 0 {
        return Err(format!("libmseed found no data bounds (code {bounds})"));
    }
    if let Some(per) = u32::try_from(encoding).ok().and_then(fixed_sample_bytes) {
        let need = (count.max(0) as u64).saturating_mul(per as u64);
        if need > size as u64 {
            return Err(format!(
                "header announces {count} samples of {per} bytes, the record holds {size} data bytes"
            ));
        }
    }
    msr.unpack_data()
        .map_err(|e| format!("libmseed could not unpack the samples: {e}"))?;
    Ok(msr)
}

fn decode_unlogged(bytes: &[u8]) -> Result<Record, String> {
    let msr = parse_record(bytes)?;
    let [net, sta, loc, cha] = nslc(&msr.sid_lossy())?;
    let id = ChannelId::new(&net, &sta, &loc, &cha);
    let start_ns = msr
        .start_time()
        .map_err(|e| format!("bad start time: {e}"))?
        .unix_timestamp_nanos();
    let start_ns = i64::try_from(start_ns).map_err(|_| "start time out of range".to_string())?;
    let expected = msr.sample_cnt();
    let decoded = msr.num_samples();
    if decoded != expected {
        return Err(format!(
            "{id}: decoded {decoded} of {expected} samples the header announces"
        ));
    }
    let samples: Vec<f64> = match msr.sample_type() {
        MSSampleType::Integer32 => samples_as_f64::<i32>(&msr, |v| v as f64),
        MSSampleType::Float32 => samples_as_f64::<f32>(&msr, |v| v as f64),
        MSSampleType::Float64 => samples_as_f64::<f64>(&msr, |v| v),
        MSSampleType::Text => return Err(format!("{id}: text (log) record, not waveform data")),
        MSSampleType::Unknown => return Err(format!("{id}: unknown sample type")),
    };
    let sample_rate = msr.sample_rate_hz();
    let valid_rate = sample_rate.is_finite() && sample_rate > 0.0;
    if !samples.is_empty() && !valid_rate {
        return Err(format!("{id}: invalid sample rate {sample_rate}"));
    }
    if let Some(bad) = samples.iter().position(|v| !v.is_finite()) {
        return Err(format!("{id}: sample {bad} is not a finite number"));
    }
    Ok(Record {
        id,
        start_ns,
        sample_rate,
        samples,
    })
}

fn samples_as_f64<T: Copy>(msr: &MSRecord, convert: impl Fn(T) -> f64) -> Vec<f64> {
    msr.data_samples::<T>()
        .map(|s| s.iter().map(|&v| convert(v)).collect())
        .unwrap_or_default()
}

/// Length of the record starting at `bytes[0]`, `Err` when no record header is there.
fn record_length(bytes: &[u8]) -> Result<Option<usize>, String> {
    if bytes.len() < MIN_HEADER_BYTES {
        return Err(format!(
            "{} trailing bytes, too short for a record header",
            bytes.len()
        ));
    }
    blockettes_fit(bytes)?;
    libmseed_log::start();
    let detected = mseed::detect(bytes);
    // Failed detections while resynchronising are expected; their log lines are noise.
    libmseed_log::take();
    match detected {
        Ok(det) => Ok(det.rec_len.map(|l| l as usize)),
        Err(e) => Err(format!("not a miniSEED record header ({e})")),
    }
}

/// Walks a miniSEED 2 header's blockette chain as libmseed's `ms3_detect` does, refusing one
/// whose next blockette starts less than 4 bytes before the end of the buffer: libmseed (3.1.3)
/// reads its type and link there without a bounds check (found by the fuzzer). miniSEED 3
/// headers have no chain.
fn blockettes_fit(bytes: &[u8]) -> Result<(), String> {
    if bytes.starts_with(b"MS\x03") || bytes.len() < MIN_HEADER_BYTES {
        return Ok(());
    }
    let little = header_is_little_endian(bytes);
    let u16_at = |i: usize| header_u16(bytes, i, little);
    let mut at = u16_at(46) as usize;
    while at > 47 && at <= bytes.len() {
        if at + 4 > bytes.len() {
            return Err(format!(
                "blockette at byte {at} runs past the {}-byte buffer",
                bytes.len()
            ));
        }
        let (kind, next) = (u16_at(at), u16_at(at + 2) as usize);
        if kind == 1000 && at + 8 <= bytes.len() {
            break;
        }
        if next != 0 && (next < 4 || next - 4 <= at) {
            break; // libmseed refuses the chain itself
        }
        at = next;
    }
    Ok(())
}

/// libmseed's byte-order rule for a miniSEED 2 header: host (little-endian) order when its year
/// and day are plausible read that way, else swapped.
fn header_is_little_endian(bytes: &[u8]) -> bool {
    let year = u16::from_le_bytes([bytes[20], bytes[21]]);
    let day = u16::from_le_bytes([bytes[22], bytes[23]]);
    (1900..=2100).contains(&year) && (1..=366).contains(&day)
}

/// The 16-bit header field at byte `at`, in the header's byte order.
fn header_u16(bytes: &[u8], at: usize, little: bool) -> u16 {
    let b = [bytes[at], bytes[at + 1]];
    if little {
        u16::from_le_bytes(b)
    } else {
        u16::from_be_bytes(b)
    }
}

/// Next offset from `from`, in steps of `step` bytes, where a record header is detected.
fn next_header(bytes: &[u8], from: usize, step: usize) -> Option<usize> {
    let mut pos = from;
    while pos + MIN_HEADER_BYTES <= bytes.len() {
        if record_length(&bytes[pos..]).is_ok() {
            return Some(pos);
        }
        pos += step;
    }
    None
}

/// One piece of a miniSEED byte stream: a record's bytes, or bytes that are not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Record {
        offset: usize,
        len: usize,
    },
    /// Not a record (garbage, or a record announcing more bytes than remain), with the reason.
    Bad {
        offset: usize,
        len: usize,
        reason: String,
    },
}

/// Splits `bytes` into records without decoding them, resynchronising after garbage at the
/// first byte where a header is detected. Every byte belongs to exactly one frame.
pub fn split_records(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match record_length(rest) {
            Ok(Some(len)) if len <= rest.len() => {
                frames.push(Frame::Record { offset: pos, len });
                pos += len;
            }
            Ok(Some(len)) => {
                frames.push(Frame::Bad {
                    offset: pos,
                    len: rest.len(),
                    reason: format!(
                        "truncated record: header announces {len} bytes, {} remain",
                        rest.len()
                    ),
                });
                break;
            }
            // miniSEED 2 without blockette 1000: the next header tells the length.
            Ok(None) => {
                let len =
                    next_header(bytes, pos + RECORD_GRID, RECORD_GRID).unwrap_or(bytes.len()) - pos;
                frames.push(Frame::Record { offset: pos, len });
                pos += len;
            }
            Err(reason) => {
                // Junk of any length may come before the next record: every byte is a candidate.
                let resume = next_header(bytes, pos + 1, 1).unwrap_or(bytes.len());
                frames.push(Frame::Bad {
                    offset: pos,
                    len: resume - pos,
                    reason: format!("skipped {} bytes: {reason}", resume - pos),
                });
                pos = resume;
            }
        }
    }
    frames
}

/// Decodes every record in `bytes`; `source` names the input in warnings and errors.
///
/// Corrupt records and non-miniSEED bytes become warnings and decoding resumes at the next
/// record header; an input with no decodable record at all is an error.
pub fn decode_bytes(bytes: &[u8], source: &str) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut builder = TraceBuilder::default();
    let warn = |out: &mut Decoded, offset: usize, message: String| {
        out.warnings.push(DecodeWarning {
            source: source.to_string(),
            offset: offset as u64,
            message,
        })
    };
    for frame in split_records(bytes) {
        let (offset, len) = match frame {
            Frame::Record { offset, len } => (offset, len),
            Frame::Bad { offset, reason, .. } => {
                warn(&mut out, offset, reason);
                continue;
            }
        };
        let (result, log) = decode_record_logged(&bytes[offset..offset + len]);
        for message in log {
            warn(&mut out, offset, format!("libmseed: {message}"));
        }
        match result {
            Ok(record) => {
                out.records += 1;
                builder.push(record);
            }
            Err(reason) => warn(&mut out, offset, reason),
        }
    }
    out.traces = builder.finish();
    if out.records == 0 {
        let first_problem = out
            .warnings
            .first()
            .map(|w| format!("byte {}: {}", w.offset, w.message))
            .unwrap_or_else(|| "empty input".to_string());
        return Err(DecodeError::NoRecords {
            source_name: source.to_string(),
            first_problem,
        });
    }
    Ok(out)
}

/// Reads and decodes a miniSEED file.
pub fn read_file(path: &Path) -> Result<Decoded, DecodeError> {
    let source_name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| DecodeError::Io {
        source_name: source_name.clone(),
        error,
    })?;
    decode_bytes(&bytes, &source_name)
}

/// Joins records into contiguous traces (ObsPy's rule: same channel and rate, next record
/// within half a sample period of the expected time), in order of first appearance.
#[derive(Default)]
pub struct TraceBuilder {
    traces: Vec<Trace>,
}

impl TraceBuilder {
    pub fn push(&mut self, record: Record) {
        if record.samples.is_empty() {
            return;
        }
        let joinable = self.traces.iter_mut().rev().find(|t| {
            t.id == record.id
                && (t.sample_rate - record.sample_rate).abs() <= 1e-4 * t.sample_rate
                && ((record.start_ns - t.next_ns()).abs() as f64) <= 0.5 * t.period_ns()
        });
        match joinable {
            Some(trace) => trace.samples.extend_from_slice(&record.samples),
            None => self.traces.push(Trace {
                id: record.id,
                start_ns: record.start_ns,
                sample_rate: record.sample_rate,
                samples: record.samples,
            }),
        }
    }

    pub fn finish(self) -> Vec<Trace> {
        self.traces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_identifiers_split_as_libmseed_does() {
        let ids = |s: &str| nslc(s).map(|p| p.join("."));
        assert_eq!(ids("FDSN:BW_RJOB__E_H_Z").unwrap(), "BW.RJOB..EHZ");
        assert_eq!(ids("FDSN:XX_STA_00_L_O_G").unwrap(), "XX.STA.00.LOG");
        // Extended channels stay as they are; namespaces before the last ':' are skipped.
        assert_eq!(ids("FDSN:XX_STA_00_BH_X_1").unwrap(), "XX.STA.00.BH_X_1");
        assert_eq!(ids("FDSN:ns:XX_STA__H_H_Z").unwrap(), "XX.STA..HHZ");
        assert_eq!(ids("FDSN:XX_STA_00___").unwrap(), "XX.STA.00.__");
        for bad in [
            "XFDSN:XX_STA__H_H_Z",
            "FDSN:XX_STA_H_H_Z",
            "FDSN:XX_STA___H_H_Z",
            "",
        ] {
            assert!(ids(bad).is_err(), "{bad}");
        }
    }

    fn record(start_ns: i64, n: usize) -> Record {
        Record {
            id: ChannelId::new("XX", "STA", "", "HHZ"),
            start_ns,
            sample_rate: 100.0,
            samples: vec![1.0; n],
        }
    }

    #[test]
    fn joins_contiguous_records_and_splits_at_gaps() {
        let mut b = TraceBuilder::default();
        b.push(record(0, 100));
        b.push(record(1_000_000_000, 50)); // contiguous
        b.push(record(1_500_000_000 + 4_000_000, 10)); // 4 ms late: still contiguous
        b.push(record(3_000_000_000, 10)); // gap
        let traces = b.finish();
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].samples.len(), 160);
        assert_eq!(traces[1].start_ns, 3_000_000_000);
    }

    #[test]
    fn junk_of_any_length_between_records_loses_no_record() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/real/BW.RJOB.2009-08-24.steim2.mseed");
        let bytes = std::fs::read(path).unwrap();
        let clean = split_records(&bytes);
        let Frame::Record { offset, len } = clean[1] else {
            panic!("{:?}", clean[1]);
        };
        for junk_len in [1usize, 63, 65, 300, 1001] {
            let junk: Vec<u8> = (0..junk_len as u32)
                .map(|i| (i * 37 % 200) as u8 + 1)
                .collect();
            let cut = offset + len;
            let spliced = [&bytes[..cut], &junk[..], &bytes[cut..]].concat();
            let frames = split_records(&spliced);
            let records = frames
                .iter()
                .filter(|f| matches!(f, Frame::Record { .. }))
                .count();
            assert_eq!(records, clean.len(), "{junk_len} bytes of junk");
            assert_eq!(
                frames[2],
                Frame::Bad {
                    offset: cut,
                    len: junk_len,
                    reason: match &frames[2] {
                        Frame::Bad { reason, .. } => reason.clone(),
                        f => panic!("{f:?}"),
                    }
                },
                "{junk_len} bytes of junk"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_source() {
        let junk: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        let err = decode_bytes(&junk, "junk.bin").unwrap_err().to_string();
        assert!(err.contains("junk.bin"), "{err}");
        assert!(err.contains("byte 0"), "{err}");
        let empty = decode_bytes(&[], "empty").unwrap_err().to_string();
        assert!(empty.contains("empty input"), "{empty}");
    }
}
