//! `approxtrain data fetch` against a local HTTP server on 127.0.0.1 that
//! serves the shipped MNIST subset (and synthetic CIFAR-10 / text files):
//! downloads land whole and load, present files are skipped, and a 404, a
//! corrupt file, a wrong md5 or a cut connection is a clear error that
//! leaves no file behind.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use approxtrain::fetch::{fetch_dataset, FetchError, FetchEvent, FetchOptions};
use nets::data::dir::resolve_in;
use nets::data::{Dataset, DatasetSource, Split};
use rand::Rng;
use support::test_rng;

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with this body.
    File(Vec<u8>),
    /// 200 announcing more bytes than it sends, then closing.
    CutShort(Vec<u8>),
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 serving `files` by name (any
/// other path is a 404); returns its base URL and a request counter.
fn serve(files: HashMap<String, Reply>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line.trim_end() != "" {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let name = path.trim_start_matches('/');
            let (head, body) = match files.get(name) {
                Some(Reply::File(b)) => (format!("200 OK\r\nContent-Length: {}", b.len()), &b[..]),
                Some(Reply::CutShort(b)) => {
                    (format!("200 OK\r\nContent-Length: {}", b.len() * 2), &b[..])
                }
                None => ("404 Not Found\r\nContent-Length: 0".to_string(), &[][..]),
            };
            let _ = write!(stream, "HTTP/1.1 {head}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(body);
        }
    });
    (base, count)
}

/// The shipped subset's files, as the server's replies.
fn subset_files() -> HashMap<String, Reply> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-subset/mnist");
    MNIST_FILES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Reply::File(std::fs::read(dir.join(n)).unwrap()),
            )
        })
        .collect()
}

fn opts(base: &str, verify_md5: bool) -> FetchOptions {
    FetchOptions {
        base_url: Some(base.to_string()),
        verify_md5,
    }
}

/// File names in `dir` (including hidden `.part` files).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn fetch_from_a_local_mirror_writes_loadable_files_and_skips_them_next_time() {
    let (base, requests) = serve(subset_files());
    let tmp = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let report = fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, false), &mut |e| {
        events.push(e)
    })
    .unwrap();
    assert_eq!(report.written.len(), 4);
    assert!(events
        .iter()
        .any(|e| matches!(e, FetchEvent::Progress { .. })));
    let mut expected: Vec<String> = MNIST_FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listing(&tmp.path().join("mnist")), expected);
    let loc = resolve_in(Some(tmp.path()), None, Dataset::Mnist).unwrap();
    assert_eq!(
        loc.source,
        DatasetSource::Directory(tmp.path().join("mnist"))
    );
    let train = loc.load_images(Split::Train, None).unwrap();
    assert_eq!(train.len, 6000);
    assert_eq!(
        train.label_histogram(),
        [592, 671, 581, 608, 623, 514, 608, 651, 551, 601]
    );
    assert_eq!(loc.load_images(Split::Test, None).unwrap().len, 1000);

    let served = requests.load(Ordering::SeqCst);
    let again =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, false), &mut |_| {}).unwrap();
    assert_eq!((again.written.len(), again.skipped.len()), (0, 4));
    assert_eq!(
        requests.load(Ordering::SeqCst),
        served,
        "a present file was downloaded again"
    );
}

#[test]
fn the_subset_fails_the_full_mnist_md5_and_nothing_is_written() {
    let (base, _) = serve(subset_files());
    let tmp = tempfile::tempdir().unwrap();
    let err =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, true), &mut |_| {}).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Md5 { .. }), "{err:?}");
    assert!(err.to_string().contains("train-images-idx3-ubyte.gz"));
    assert_eq!(listing(&tmp.path().join("mnist")), Vec::<String>::new());
}

#[test]
fn the_full_shared_mnist_passes_the_published_md5s() {
    let root = std::env::var_os("APPROXTRAIN_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"));
    let dir = root.join("mnist");
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} not found (set APPROXTRAIN_SHARED_DATA)",
            dir.display()
        );
        return;
    }
    let files = MNIST_FILES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Reply::File(std::fs::read(dir.join(n)).unwrap()),
            )
        })
        .collect();
    let (base, _) = serve(files);
    let tmp = tempfile::tempdir().unwrap();
    let report =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, true), &mut |_| {}).unwrap();
    assert_eq!(report.written.len(), 4);
    // The shared copy itself counts as present and valid.
    let report = fetch_dataset(Dataset::Mnist, &root, &opts(&base, true), &mut |_| {}).unwrap();
    assert_eq!((report.written.len(), report.skipped.len()), (0, 4));
}

#[test]
fn a_404_is_a_clear_error_and_leaves_no_file() {
    let mut rng = test_rng();
    let mut files = subset_files();
    let gone = MNIST_FILES[rng.gen_range(0..4)];
    files.remove(gone);
    let (base, _) = serve(files);
    let tmp = tempfile::tempdir().unwrap();
    let err =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, false), &mut |_| {}).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, FetchError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("{base}/{gone}")));
    let left = listing(&tmp.path().join("mnist"));
    assert!(
        left.iter().all(|n| n != gone && !n.ends_with(".part")),
        "{left:?}"
    );
}

#[test]
fn a_corrupt_download_is_a_clear_error_and_leaves_no_file() {
    let mut rng = test_rng();
    let mut files = subset_files();
    let name = MNIST_FILES[rng.gen_range(0..4)];
    let Some(Reply::File(bytes)) = files.get_mut(name) else {
        unreachable!()
    };
    // Damage the compressed data past the gzip header: the CRC or the
    // deflate stream catches it.
    let at = rng.gen_range(20..bytes.len() - 8);
    bytes[at] ^= 1 << rng.gen_range(0..8);
    let (base, _) = serve(files);
    let tmp = tempfile::tempdir().unwrap();
    let err =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, false), &mut |_| {}).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains(name));
    let left = listing(&tmp.path().join("mnist"));
    assert!(
        left.iter().all(|n| n != name && !n.ends_with(".part")),
        "{left:?}"
    );
}

#[test]
fn a_connection_cut_short_is_a_clear_error_and_leaves_no_file() {
    let mut files = subset_files();
    let name = "t10k-labels-idx1-ubyte.gz";
    let Some(Reply::File(bytes)) = files.remove(name) else {
        unreachable!()
    };
    files.insert(name.to_string(), Reply::CutShort(bytes));
    let (base, _) = serve(files);
    let tmp = tempfile::tempdir().unwrap();
    let err =
        fetch_dataset(Dataset::Mnist, tmp.path(), &opts(&base, false), &mut |_| {}).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Transport { .. }), "{err:?}");
    let left = listing(&tmp.path().join("mnist"));
    assert!(
        left.iter().all(|n| n != name && !n.ends_with(".part")),
        "{left:?}"
    );
}

/// A CIFAR-10 binary archive laid out like the authors' (one folder,
/// six batches, the meta file) with `per_batch` random records per batch.
fn cifar_archive(rng: &mut impl Rng, per_batch: usize) -> (Vec<u8>, Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    let mut test = Vec::new();
    for name in names {
        let mut records = Vec::new();
        for _ in 0..per_batch {
            records.push(rng.gen_range(0..10u8));
            records.extend((0..3072).map(|_| rng.gen::<u8>()));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(records.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &records[..],
        )
        .unwrap();
        test = records;
    }
    let meta = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(meta.len() as u64);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "cifar-10-batches-bin/batches.meta.txt",
        &meta[..],
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    (gz.finish().unwrap(), test)
}

#[test]
fn cifar10_archive_is_extracted_flat_and_loads() {
    let mut rng = test_rng();
    let per_batch = rng.gen_range(1..5);
    let (archive, test_records) = cifar_archive(&mut rng, per_batch);
    let (base, _) = serve(HashMap::from([(
        "cifar-10-binary.tar.gz".to_string(),
        Reply::File(archive),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    // Not the authors' archive: the md5 check refuses it...
    let err = fetch_dataset(
        Dataset::Cifar10,
        tmp.path(),
        &opts(&base, true),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::Md5 { .. }), "{err:?}");
    assert_eq!(listing(&tmp.path().join("cifar-10")), Vec::<String>::new());
    // ...and without it the batches are extracted and validated.
    let report = fetch_dataset(
        Dataset::Cifar10,
        tmp.path(),
        &opts(&base, false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.written.len(), 7);
    // The fake batches hold a few records, not the 10,000 of real ones.
    std::env::set_var(nets::data::cifar::CIFAR_ANY_SIZE_ENV, "1");
    let loc = resolve_in(Some(tmp.path()), None, Dataset::Cifar10).unwrap();
    let test = loc.load_images(Split::Test, None).unwrap();
    assert_eq!(test.len, per_batch);
    let labels: Vec<u8> = test_records.chunks(3073).map(|r| r[0]).collect();
    assert_eq!(test.labels, labels);
    assert_eq!(
        loc.load_images(Split::Train, None).unwrap().len,
        5 * per_batch
    );
    assert!(!listing(&tmp.path().join("cifar-10"))
        .iter()
        .any(|n| n.ends_with(".part")));
}

#[test]
fn shakespeare_text_is_fetched_and_loads_as_a_corpus() {
    let mut rng = test_rng();
    let text: String = (0..rng.gen_range(100..1000))
        .map(|_| ['a', 'b', ' ', '\n', 'æ'][rng.gen_range(0..5)])
        .collect();
    let (base, _) = serve(HashMap::from([(
        "input.txt".to_string(),
        Reply::File(text.clone().into_bytes()),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    fetch_dataset(
        Dataset::Shakespeare,
        tmp.path(),
        &opts(&base, true),
        &mut |_| {},
    )
    .unwrap();
    let corpus = resolve_in(Some(tmp.path()), None, Dataset::Shakespeare)
        .unwrap()
        .load_text()
        .unwrap();
    let mut ids = corpus.train.clone();
    ids.extend(&corpus.valid);
    assert_eq!(corpus.decode(&ids), text);
}

#[test]
fn cli_fetch_then_show_and_a_404_exits_with_one_line() {
    let exe = env!("CARGO_BIN_EXE_approxtrain");
    let (base, _) = serve(subset_files());
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().to_str().unwrap();
    let out = Command::new(exe)
        .args([
            "data",
            "fetch",
            "mnist",
            "--data-dir",
            data_dir,
            "--base-url",
            &base,
        ])
        .arg("--skip-md5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(exe)
        .args(["data", "show", "mnist", "--data-dir", data_dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("train: 6000 images of 1x28x28"), "{stdout}");
    assert!(stdout.contains("test: 1000 images"), "{stdout}");

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(exe)
        .args(["data", "fetch", "fashion-mnist", "--data-dir"])
        .arg(empty.path())
        .args(["--base-url", &format!("{base}/nothing-here")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains("HTTP 404"),
        "{stderr}"
    );
    assert!(listing(&empty.path().join("fashion-mnist")).is_empty());
}
