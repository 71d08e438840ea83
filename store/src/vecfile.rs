//! A segment's f32 vectors (`vectors.f32`: n × dim little-endian `f32`), read from disk on demand.
//!
//! Why: the full vectors are needed only for the few points a query scores exactly (the ~100
//! candidates a graph search rescores, a filtered subset, more-like-this). Keeping them in
//! memory cost 2 KB per point at 512 dimensions, four times the int8 codes the graph walk reads.
//! So the file is memory-mapped: a vector is a borrowed slice of the page cache, a page is read
//! from disk the first time it is touched, and the kernel may drop clean pages under memory
//! pressure (they are file-backed, never swap). Touched pages do count in the process's RSS, as
//! `RssFile`, not `RssAnon`; the anonymous memory (codes, links) is what the process owns.
//!
//! The mapping is advised `MADV_RANDOM`: rescoring touches scattered vectors, and the default
//! read-ahead would pull in (and count) the neighbours of each one.
//!
//! Safety of the mapping: segment files are immutable once their generation is published (a new
//! build writes a new folder; old segments are hard-linked, never rewritten, and removed by
//! unlinking, which leaves a mapping intact). A file truncated behind Vitrine's back would make
//! a read of the lost pages fault (SIGBUS); that is outside what the data directory's one-writer
//! rule allows. Big-endian targets read the file into memory instead.

// `unsafe` here: creating the mapping, and viewing its page-aligned bytes as `f32`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Why a vector file could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum VecFileError {
    #[error("{path}: {bytes} bytes, expected {n} vectors × {dim} dimensions × 4")]
    Length { path: PathBuf, bytes: u64, n: usize, dim: usize },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// `n` vectors of `dim` floats, mapped from a file or held in memory.
pub struct VectorFile {
    dim: usize,
    n: usize,
    data: Data,
}

enum Data {
    #[cfg(target_endian = "little")]
    Mapped {
        map: memmap2::Mmap,
        path: PathBuf,
    },
    Resident(Vec<f32>),
}

impl VectorFile {
    /// Map `path`, which must hold exactly `n × dim` floats. With `resident`, read it into memory
    /// instead (the layout before this type existed, kept for measurements).
    pub fn open(path: &Path, n: usize, dim: usize, resident: bool) -> Result<Self, VecFileError> {
        let io = |source| VecFileError::Io { path: path.into(), source };
        let file = File::open(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let want = n.checked_mul(dim).and_then(|x| x.checked_mul(4));
        if want.is_none_or(|w| w as u64 != bytes) || dim == 0 {
            return Err(VecFileError::Length { path: path.into(), bytes, n, dim });
        }
        if resident || n == 0 || cfg!(target_endian = "big") {
            let mut raw = Vec::with_capacity(bytes as usize);
            BufReader::new(file).read_to_end(&mut raw).map_err(io)?;
            if raw.len() as u64 != bytes {
                return Err(VecFileError::Length { path: path.into(), bytes: raw.len() as u64, n, dim });
            }
            let floats = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            return Ok(VectorFile { dim, n, data: Data::Resident(floats) });
        }
        #[cfg(target_endian = "little")]
        {
            // SAFETY: the file is an immutable segment file (see the module doc); the mapping is
            // read-only and its length was checked above.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            if map.len() as u64 != bytes {
                return Err(VecFileError::Length { path: path.into(), bytes: map.len() as u64, n, dim });
            }
            // Advice only: a kernel that ignores it reads ahead, which costs memory, not correctness.
            let _ = map.advise(memmap2::Advice::Random);
            Ok(VectorFile { dim, n, data: Data::Mapped { map, path: path.into() } })
        }
        #[cfg(not(target_endian = "little"))]
        unreachable!("big-endian targets read the file above")
    }

    /// Vectors already in memory (n × dim in point order).
    pub fn from_vec(floats: Vec<f32>, dim: usize) -> Self {
        assert!(dim > 0 && floats.len().is_multiple_of(dim), "{} floats are not vectors of {dim}", floats.len());
        VectorFile { dim, n: floats.len() / dim, data: Data::Resident(floats) }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the vectors are read from the page cache rather than held in the process's memory.
    pub fn is_mapped(&self) -> bool {
        !matches!(self.data, Data::Resident(_))
    }

    /// Bytes this holds in the process's own (anonymous) memory.
    pub fn resident_bytes(&self) -> usize {
        match &self.data {
            Data::Resident(v) => v.len() * 4,
            #[cfg(target_endian = "little")]
            Data::Mapped { .. } => 0,
        }
    }

    /// The vector of point `i` (panics past the end, like a slice).
    pub fn vector(&self, i: usize) -> &[f32] {
        let range = i * self.dim..(i + 1) * self.dim;
        match &self.data {
            Data::Resident(v) => &v[range],
            #[cfg(target_endian = "little")]
            Data::Mapped { map, .. } => &as_floats(map)[range],
        }
    }

    /// Call `f` with every vector in point order, reading the file sequentially rather than
    /// through the mapping: a pass over all vectors (computing the codes when a segment opens)
    /// then leaves the process's RSS as it was.
    pub fn for_each(&self, mut f: impl FnMut(usize, &[f32])) -> Result<(), VecFileError> {
        match &self.data {
            Data::Resident(v) => {
                v.chunks_exact(self.dim).enumerate().for_each(|(i, x)| f(i, x));
                Ok(())
            }
            #[cfg(target_endian = "little")]
            Data::Mapped { path, .. } => {
                let io = |source| VecFileError::Io { path: path.clone(), source };
                let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
                let (mut raw, mut row) = (vec![0u8; self.dim * 4], vec![0f32; self.dim]);
                for i in 0..self.n {
                    r.read_exact(&mut raw).map_err(io)?;
                    for (x, c) in row.iter_mut().zip(raw.chunks_exact(4)) {
                        *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                    f(i, &row);
                }
                Ok(())
            }
        }
    }
}

/// The mapping's bytes as floats. The map starts on a page boundary, so it is aligned for `f32`,
/// and its length was checked to be a multiple of 4.
#[cfg(target_endian = "little")]
fn as_floats(map: &memmap2::Mmap) -> &[f32] {
    // SAFETY: every bit pattern is a valid f32; the bytes are little endian and so is the target.
    let (head, floats, tail) = unsafe { map.align_to::<f32>() };
    assert!(head.is_empty() && tail.is_empty(), "a mapping is page aligned");
    floats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, floats: &[f32]) {
        std::fs::write(path, floats.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }

    #[test]
    fn mapped_and_resident_files_read_the_same_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.f32");
        let floats: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5 - 7.0).collect();
        write(&path, &floats);
        let mapped = VectorFile::open(&path, 100, 30, false).unwrap();
        let resident = VectorFile::open(&path, 100, 30, true).unwrap();
        assert_eq!(mapped.is_mapped(), cfg!(target_endian = "little"));
        assert!(!resident.is_mapped());
        assert_eq!(mapped.resident_bytes(), if mapped.is_mapped() { 0 } else { 12_000 });
        for i in [0, 1, 57, 99] {
            assert_eq!(mapped.vector(i), &floats[i * 30..(i + 1) * 30]);
            assert_eq!(resident.vector(i), mapped.vector(i));
        }
        let mut seen = 0;
        mapped
            .for_each(|i, v| {
                assert_eq!(v, &floats[i * 30..(i + 1) * 30]);
                seen += 1;
            })
            .unwrap();
        assert_eq!(seen, 100);
    }

    #[test]
    fn a_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.f32");
        write(&path, &[1.0; 10]);
        for (n, dim) in [(3, 3), (2, 6), (1, 11), (0, 4), (5, 0), (usize::MAX / 2, 3), (usize::MAX, usize::MAX)] {
            assert!(matches!(VectorFile::open(&path, n, dim, false), Err(VecFileError::Length { .. })), "{n} × {dim}");
        }
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(matches!(VectorFile::open(&path, 1, 2, false), Err(VecFileError::Length { .. })), "a torn float");
        assert!(matches!(VectorFile::open(&dir.path().join("absent"), 1, 1, false), Err(VecFileError::Io { .. })));
        // An empty segment is valid: nothing to map.
        std::fs::write(&path, []).unwrap();
        assert!(VectorFile::open(&path, 0, 4, false).unwrap().is_empty());
    }
}
