//! Record batch headers, read in place.
//!
//! The gateway never decodes records: produce limits, idempotence checks and metering need only
//! the fixed header every v2 record batch starts with (KIP-98), so the cost per request is a
//! few loads per batch, whatever the batch holds.

/// Offsets in a v2 record batch header (KIP-98).
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const LAST_OFFSET_DELTA_AT: usize = 23;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
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

/// Where a producer's batch sits in its sequence for a partition (KIP-98): the producer id,
/// its epoch, and the sequence number of the batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSequence {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// The producer sequence of the first batch of a produce partition's records, if it has one
/// (idempotent and transactional producers; a plain producer's batches carry -1). Clients send
/// one batch per partition per request, so the first batch is where the request sits in the
/// producer's sequence. Records already walked by [`summarize`].
pub fn first_sequence(records: &[u8]) -> Option<ProducerSequence> {
    let header = records.get(..BATCH_HEADER_LEN)?;
    let field = |at: usize, len: usize| &header[at..at + len];
    let producer_id = i64::from_be_bytes(field(PRODUCER_ID_AT, 8).try_into().ok()?);
    let epoch = i16::from_be_bytes(field(PRODUCER_EPOCH_AT, 2).try_into().ok()?);
    let base_sequence = i32::from_be_bytes(field(BASE_SEQUENCE_AT, 4).try_into().ok()?);
    (producer_id >= 0).then_some(ProducerSequence {
        producer_id,
        epoch,
        base_sequence,
    })
}

/// The producer sequence of the last record of the first batch (its base sequence plus its
/// last offset delta, wrapping as Kafka's sequences do), for a batch with a producer id.
pub fn last_sequence(records: &[u8]) -> Option<i32> {
    let first = first_sequence(records)?;
    let at = LAST_OFFSET_DELTA_AT;
    let delta = i32::from_be_bytes(records.get(at..at + 4)?.try_into().ok()?);
    // Sequences run to i32::MAX and start again at 0.
    let last = (i64::from(first.base_sequence) + i64::from(delta)).rem_euclid(1 << 31);
    i32::try_from(last).ok()
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

/// Records in a produce partition's batches, from each batch header's record count (the
/// count MSK's MessagesInPerSec reports). Batches must have passed [`summarize`]; a malformed
/// tail counts nothing.
pub fn record_count(records: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut rest = records;
    while rest.len() >= BATCH_HEADER_LEN {
        let len = i32::from_be_bytes(
            rest[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let Some(size) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&s| s >= BATCH_HEADER_LEN && s <= rest.len())
        else {
            break;
        };
        let count = i32::from_be_bytes(
            rest[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        total += u64::try_from(count).unwrap_or(0);
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
    fn the_last_sequence_is_the_base_plus_the_last_offset_delta_wrapping() {
        let mut records = batch(100, 42);
        records[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&10i32.to_be_bytes());
        records[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&4i32.to_be_bytes());
        assert_eq!(last_sequence(&records), Some(14));
        records[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        assert_eq!(last_sequence(&records), Some(2), "MAX-1, MAX, 0, 1, 2");
        assert_eq!(last_sequence(&batch(100, -1)), None, "no producer id");
    }

    #[test]
    fn the_first_batch_says_where_the_request_sits_in_its_producers_sequence() {
        let mut records = batch(100, 42);
        records[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&3i16.to_be_bytes());
        records[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&1234i32.to_be_bytes());
        records.extend(batch(100, 42));
        assert_eq!(
            first_sequence(&records),
            Some(ProducerSequence {
                producer_id: 42,
                epoch: 3,
                base_sequence: 1234
            })
        );
        assert_eq!(first_sequence(&batch(100, -1)), None);
        assert_eq!(first_sequence(&records[..40]), None);
        assert_eq!(first_sequence(&[]), None);
    }

    #[test]
    fn records_are_counted_from_each_batch_header() {
        let mut records = batch(100, -1);
        records[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&3i32.to_be_bytes());
        let mut second = batch(200, 7);
        second[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&40i32.to_be_bytes());
        records.extend(second);
        assert_eq!(record_count(&records), 43);
        // A truncated tail and a negative count count nothing.
        assert_eq!(record_count(&records[..250]), 3);
        let mut negative = batch(100, -1);
        negative[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(record_count(&negative), 0);
        assert_eq!(record_count(&[]), 0);
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
