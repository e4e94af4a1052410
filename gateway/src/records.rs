//! Record batch headers, read in place.
//!
//! The gateway never decodes records: produce limits, idempotence checks and metering need only
//! the fixed header every v2 record batch starts with (KIP-98), so the cost per request is a
//! few loads per batch, whatever the batch holds.

/// Offsets in a v2 record batch header (KIP-98).
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const PRODUCER_ID_AT: usize = 43;
const BATCH_HEADER_LEN: usize = 61;

/// What the gateway needs to know of a partition's records, read from batch headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub batches: usize,
    /// Total bytes of all batches, as on the wire.
    pub bytes: usize,
    pub largest: usize,
    /// Any batch carries a producer id (idempotent or transactional).
    pub has_producer_id: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record batches are malformed")]
pub struct CorruptBatches;

/// Walks the batch headers of a produce partition's records.
pub fn summarize(records: &[u8]) -> Result<BatchSummary, CorruptBatches> {
    let mut s = BatchSummary {
        batches: 0,
        bytes: 0,
        largest: 0,
        has_producer_id: false,
    };
    let mut rest = records;
    while !rest.is_empty() {
        if rest.len() < BATCH_HEADER_LEN || rest[MAGIC_AT] != 2 {
            return Err(CorruptBatches);
        }
        let len = i32::from_be_bytes(
            rest[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&t| t >= BATCH_HEADER_LEN && t <= rest.len())
            .ok_or(CorruptBatches)?;
        let producer_id = i64::from_be_bytes(
            rest[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]
                .try_into()
                .expect("8 bytes"),
        );
        s.batches += 1;
        s.bytes += total;
        s.largest = s.largest.max(total);
        s.has_producer_id |= producer_id >= 0;
        rest = &rest[total..];
    }
    Ok(s)
}

/// Bytes of the complete batches at the start of a fetched partition's records. A fetch may end
/// in a truncated batch (the broker stops at the size limit); clients discard it, so it is not
/// delivered and not metered.
pub fn complete_batch_bytes(records: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut rest = records;
    while rest.len() >= 12 {
        let len = i32::from_be_bytes(
            rest[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let Some(size) = usize::try_from(len).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        if size > rest.len() {
            break;
        }
        total += size as u64;
        rest = &rest[size..];
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(total_len: usize, producer_id: i64) -> Vec<u8> {
        let mut b = vec![0u8; total_len];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
            .copy_from_slice(&((total_len - 12) as i32).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        b
    }

    #[test]
    fn walks_batches_without_decoding_records() {
        let mut records = batch(100, -1);
        records.extend(batch(300, 7));
        let s = summarize(&records).unwrap();
        assert_eq!(s.batches, 2);
        assert_eq!(s.bytes, 400);
        assert_eq!(s.largest, 300);
        assert!(s.has_producer_id);
        assert_eq!(summarize(&[]).unwrap().batches, 0);
    }

    #[test]
    fn fetched_bytes_count_only_complete_batches() {
        let mut records = batch(100, -1);
        records.extend(batch(200, -1));
        assert_eq!(complete_batch_bytes(&records), 300);
        assert_eq!(complete_batch_bytes(&records[..250]), 100);
        assert_eq!(complete_batch_bytes(&records[..5]), 0);
        assert_eq!(complete_batch_bytes(&[]), 0);
    }

    #[test]
    fn malformed_batches_are_refused_not_trusted() {
        let good = batch(100, -1);
        assert_eq!(summarize(&good[..50]), Err(CorruptBatches));
        let mut wrong_magic = good.clone();
        wrong_magic[MAGIC_AT] = 1;
        assert_eq!(summarize(&wrong_magic), Err(CorruptBatches));
        let mut overlong = good.clone();
        overlong[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&1000i32.to_be_bytes());
        assert_eq!(summarize(&overlong), Err(CorruptBatches));
        let mut negative = good;
        negative[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(summarize(&negative), Err(CorruptBatches));
    }
}
