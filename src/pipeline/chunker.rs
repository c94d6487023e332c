//! Content-defined chunking (FastCDC 2020) over any `Read`, with a gear table seeded by a
//! repository secret (SR-5) and one reusable buffer, so chunking a million small files does
//! not allocate a million buffers.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, Normalization, MASKS};

use crate::repo::ChunkerParams;

pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new(p: ChunkerParams, seed: u64) -> Self {
        let bits = fastcdc::v2020::logarithm2(p.avg_size);
        let norm = Normalization::Level1.bits();
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            mask_s: MASKS[(bits + norm) as usize],
            mask_l: MASKS[(bits - norm) as usize],
            gear,
            gear_ls,
            buf: Vec::new(),
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Splits everything `r` yields into chunks, calling `f` for each in order.
    /// Memory stays at twice the maximum chunk size whatever the input size.
    pub fn chunk<R: Read + ?Sized, E: From<io::Error>>(
        &mut self,
        r: &mut R,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let cap = 2 * self.max;
        if self.buf.len() < cap {
            self.buf = vec![0u8; cap];
        }
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            if !eof && end - start < self.max {
                // Compact, then fill as far as the buffer allows.
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < cap {
                    match r.read(&mut self.buf[end..cap]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let (_, n) = cut_gear(
                &self.buf[start..end],
                self.min,
                self.avg,
                self.max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &self.gear,
                &self.gear_ls,
            );
            let n = if n == 0 { end - start } else { n };
            f(&self.buf[start..start + n])?;
            start += n;
            total += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &mut Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.chunk::<_, io::Error>(&mut &data[..], |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let data = pseudo_random(1_000_000, 42);
        let mut c = Chunker::new(params(), 12345);
        let cs = chunks(&mut c, &data);
        assert_eq!(cs.concat(), data);
        for ch in &cs[..cs.len() - 1] {
            assert!(ch.len() >= 2048 && ch.len() <= 32768, "{}", ch.len());
        }
        assert!(chunks(&mut c, &[]).is_empty());
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert_and_depend_on_the_seed() {
        let data = pseudo_random(500_000, 7);
        let mut edited = data.clone();
        edited.splice(100_000..100_000, b"inserted bytes".iter().copied());
        let mut c = Chunker::new(params(), 99);
        let a = chunks(&mut c, &data);
        let b = chunks(&mut c, &edited);
        let shared = a.iter().filter(|x| b.contains(x)).count();
        assert!(
            shared * 10 >= a.len() * 8,
            "only {shared} of {} chunks shared",
            a.len()
        );
        let mut other = Chunker::new(params(), 100);
        assert_ne!(
            chunks(&mut other, &data)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            a.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}
