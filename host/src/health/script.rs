//! The `steps` health check: an ordered send/expect script on one TCP
//! connection (as HAProxy's `tcp-check`). A `send` writes its bytes; an
//! `expect` reads until its bytes have arrived among those read since the
//! previous expect (at most [`HEALTH_EXPECT_LIMIT`] of them are kept: when
//! the buffer is full its oldest part is dropped, keeping enough to match
//! across the cut). The connection closing before an expect matched fails
//! the check; the caller bounds the whole script with the check's
//! `timeout`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{HEALTH_EXPECT_LIMIT, HealthStep};

/// Runs `steps` over `stream`; Err says which step failed and why.
pub(super) async fn run<S>(stream: &mut S, steps: &[HealthStep]) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            HealthStep::Send(bytes) => stream
                .write_all(bytes)
                .await
                .map_err(|e| format!("step {i}: send: {e}"))?,
            HealthStep::Expect(bytes) => expect(stream, &mut buffer, bytes)
                .await
                .map_err(|e| format!("step {i}: expect {}: {e}", String::from_utf8_lossy(bytes)))?,
        }
    }
    Ok(())
}

/// Reads into `buffer` until it contains `needle`, then drops the buffer
/// up to the end of the match (the next expect searches what came after
/// it).
async fn expect<S>(stream: &mut S, buffer: &mut Vec<u8>, needle: &[u8]) -> Result<(), String>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = find(buffer, needle) {
            buffer.drain(..at + needle.len());
            return Ok(());
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err(format!(
                "connection closed first (got {:?})",
                String::from_utf8_lossy(&buffer[buffer.len().saturating_sub(64)..])
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
        bound(buffer);
    }
}

/// Keeps the newest [`HEALTH_EXPECT_LIMIT`] bytes (an expect is at most
/// that long, so a match straddling the cut is still found).
fn bound(buffer: &mut Vec<u8>) {
    if let Some(cut) = buffer.len().checked_sub(HEALTH_EXPECT_LIMIT) {
        buffer.drain(..cut);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(script: &[(&str, &str)]) -> Vec<HealthStep> {
        let step = |&(kind, text): &(&str, &str)| match kind {
            "send" => HealthStep::Send(text.as_bytes().to_vec()),
            _ => HealthStep::Expect(text.as_bytes().to_vec()),
        };
        script.iter().map(step).collect()
    }

    /// Runs `script` against a peer that answers with `reply` after
    /// reading what the script sends, and returns the result and what
    /// the peer read.
    async fn against(
        reply: &'static [u8],
        script: &[(&str, &str)],
    ) -> (Result<(), String>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let sent: usize = steps(script)
            .iter()
            .map(|s| match s {
                HealthStep::Send(b) => b.len(),
                HealthStep::Expect(_) => 0,
            })
            .sum();
        let peer = tokio::spawn(async move {
            let mut got = vec![0; sent];
            theirs.read_exact(&mut got).await.unwrap();
            theirs.write_all(reply).await.unwrap();
            got
        });
        let result = run(&mut ours, &steps(script)).await;
        drop(ours);
        (result, peer.await.unwrap())
    }

    #[tokio::test]
    async fn send_then_expect_passes_on_the_substring() {
        let (result, got) =
            against(b"+PONG\r\n", &[("send", "PING\r\n"), ("expect", "+PONG")]).await;
        assert_eq!(result, Ok(()));
        assert_eq!(got, b"PING\r\n");
    }

    #[tokio::test]
    async fn a_wrong_answer_fails_when_the_peer_closes() {
        let (result, _) = against(b"-ERR\r\n", &[("send", "PING\r\n"), ("expect", "+PONG")]).await;
        let error = result.unwrap_err();
        assert!(
            error.contains("step 1") && error.contains("closed"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn each_expect_consumes_up_to_its_match() {
        let script = [("send", "x"), ("expect", "a"), ("expect", "a")];
        assert_eq!(against(b"a-a", &script).await.0, Ok(()));
        assert!(
            against(b"a", &script).await.0.is_err(),
            "one `a` for two expects"
        );
    }

    #[test]
    fn the_buffer_keeps_its_tail() {
        let mut buffer = vec![b'x'; HEALTH_EXPECT_LIMIT + 10];
        buffer.extend_from_slice(b"tail");
        bound(&mut buffer);
        assert_eq!(buffer.len(), HEALTH_EXPECT_LIMIT);
        assert!(buffer.ends_with(b"tail"));
    }
}
