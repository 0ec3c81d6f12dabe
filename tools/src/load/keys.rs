//! Message keys and partition choice: a small seeded PRNG, a Zipf sampler, and Kafka's default
//! partitioner hash (murmur2), so keyed messages land where a Java client would put them.

use super::workload::KeyDistribution;
use std::io::Write as _;

/// A small, fast, seeded PRNG (xorshift64*). Not for cryptography; reproducible per seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform value in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipf sampling over ranks `0..n` with exponent `s`, by binary search in a precomputed CDF.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n >= 1` ranks; rank 0 is the most frequent.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut total = 0.0;
        for k in 1..=n.max(1) {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Kafka's murmur2 (as in its `Utils.murmur2`), used by the default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a keyed message.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

/// Chooses each message's key and partition according to a [`KeyDistribution`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    dist: KeyDistribution,
    partitions: usize,
    key_count: u64,
    zipf: Option<std::rc::Rc<Zipf>>,
    rng: Rng,
    counter: u64,
    sticky: usize,
    key: Vec<u8>,
}

impl KeyChooser {
    /// A chooser for one producer; `seed` makes it reproducible.
    pub fn new(
        dist: KeyDistribution,
        partitions: usize,
        key_count: u64,
        zipf: Option<std::rc::Rc<Zipf>>,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let sticky = rng.below(partitions.max(1) as u64) as usize;
        Self {
            dist,
            partitions: partitions.max(1),
            key_count: key_count.max(1),
            zipf,
            rng,
            counter: seed,
            sticky,
            key: Vec::with_capacity(20),
        }
    }

    /// The next message's partition and key (`None`: a null key).
    pub fn choose(&mut self) -> (usize, Option<&[u8]>) {
        let index = match self.dist {
            KeyDistribution::None => return (self.sticky, None),
            KeyDistribution::RoundRobin => {
                self.counter = self.counter.wrapping_add(1);
                self.counter % self.key_count
            }
            KeyDistribution::Random => self.rng.below(self.key_count),
            KeyDistribution::Zipf => match &self.zipf {
                Some(z) => z.sample(&mut self.rng) as u64,
                None => self.rng.below(self.key_count),
            },
        };
        self.key.clear();
        // Writing into a Vec cannot fail; no allocation once the Vec has grown.
        let _ = write!(self.key, "key-{index}");
        (
            partition_for_key(&self.key, self.partitions),
            Some(&self.key),
        )
    }

    /// Moves keyless messages to another partition (called when a sticky batch is sent),
    /// as Kafka's sticky partitioner does.
    pub fn batch_sent(&mut self, partition: usize) {
        if self.dist == KeyDistribution::None && partition == self.sticky && self.partitions > 1 {
            let step = 1 + self.rng.below(self.partitions as u64 - 1) as usize;
            self.sticky = (self.sticky + step) % self.partitions;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn rng_below_is_in_range_and_spread() {
        let mut r = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(100, 1.0);
        let mut r = Rng::new(1);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.sample(&mut r)] += 1;
        }
        // With s=1 over 100 ranks rank 0 has ~19 % of the mass, rank 1 about half of that.
        assert!((17_000..21_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[99]);
    }

    #[test]
    fn keyless_is_sticky_until_a_batch_is_sent() {
        let mut k = KeyChooser::new(KeyDistribution::None, 6, 1, None, 3);
        let (p0, key) = k.choose();
        assert!(key.is_none());
        assert_eq!(k.choose().0, p0);
        k.batch_sent(p0);
        assert_ne!(k.choose().0, p0);
    }

    #[test]
    fn round_robin_keys_cover_partitions() {
        let mut k = KeyChooser::new(KeyDistribution::RoundRobin, 6, 1000, None, 0);
        let mut hit = [false; 6];
        for _ in 0..1000 {
            let (p, key) = k.choose();
            assert!(key.is_some());
            hit[p] = true;
        }
        assert!(hit.iter().all(|h| *h));
    }
}
