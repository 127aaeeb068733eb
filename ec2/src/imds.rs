//! Region and VPC of the instance vpcrouter runs on, from the EC2 instance metadata service
//! (used when `-r/--region` or `-v/--vpc` is not given).

use std::time::Duration;

use tracing::debug;

use crate::error::{error_chain, Ec2Error};

/// Region and VPC of the instance we run on, from the instance metadata service (IMDSv2),
/// within 2 s. Off EC2 the error tells the user to pass -r/--region and -v/--vpc.
pub async fn detect_region_and_vpc() -> Result<(String, String), Ec2Error> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(500))
        .operation_timeout(Duration::from_secs(2))
        .build();
    detect_with(&client).await
}

/// [`detect_region_and_vpc`] with a given IMDS client.
async fn detect_with(client: &aws_config::imds::Client) -> Result<(String, String), Ec2Error> {
    let get = |path: String| async move {
        client
            .get(format!("/latest/meta-data/{path}"))
            .await
            .map(|s| s.as_ref().trim().to_owned())
            .map_err(|e| Ec2Error::NoMetadata { message: format!("{path}: {}", error_chain(&e)) })
    };
    let detect = async {
        let region = match get("placement/region".into()).await {
            Ok(region) => region,
            Err(first) => {
                let mut az = get("placement/availability-zone".into()).await.map_err(|_| first)?;
                az.pop();
                az
            }
        };
        let mac = match get("mac".into()).await {
            Ok(mac) => mac,
            Err(_) => {
                let macs = get("network/interfaces/macs/".into()).await?;
                macs.lines().next().unwrap_or_default().trim_end_matches('/').to_owned()
            }
        };
        let vpc = get(format!("network/interfaces/macs/{mac}/vpc-id")).await?;
        if region.is_empty() || mac.is_empty() || vpc.is_empty() {
            return Err(Ec2Error::NoMetadata { message: "empty region, MAC or VPC id".into() });
        }
        debug!(region = %region, vpc = %vpc, "detected from instance metadata");
        Ok((region, vpc))
    };
    match tokio::time::timeout(Duration::from_secs(2), detect).await {
        Ok(result) => result,
        Err(_) => Err(Ec2Error::NoMetadata { message: "no answer within 2 s".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
    }

    /// A tiny IMDSv2 imitation answering `paths` (relative to `/latest/meta-data/`).
    fn fake_imds(paths: &'static [(&'static str, &'static str)]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let body = if path == "/latest/api/token" {
                    Some("token")
                } else {
                    path.strip_prefix("/latest/meta-data/")
                        .and_then(|p| paths.iter().find(|(k, _)| *k == p))
                        .map(|(_, v)| *v)
                };
                let (status, body) = body.map_or(("404 Not Found", ""), |b| ("200 OK", b));
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn imds_client(url: &str) -> aws_config::imds::Client {
        aws_config::imds::Client::builder().endpoint(url).expect("endpoint").max_attempts(2).build()
    }

    #[tokio::test]
    async fn detects_region_and_vpc() {
        let url = fake_imds(&[
            ("placement/region", "eu-west-1"),
            ("mac", "0a:00:00:00:00:01"),
            ("network/interfaces/macs/0a:00:00:00:00:01/vpc-id", "vpc-123"),
        ]);
        let got = detect_with(&imds_client(&url)).await.expect("detect");
        assert_eq!(got, ("eu-west-1".to_owned(), "vpc-123".to_owned()));

        let url = fake_imds(&[
            ("placement/availability-zone", "ap-south-2b"),
            ("network/interfaces/macs/", "0a:00:00:00:00:02/\n0a:00:00:00:00:03/"),
            ("network/interfaces/macs/0a:00:00:00:00:02/vpc-id", "vpc-456"),
        ]);
        let got = detect_with(&imds_client(&url)).await.expect("detect (fallbacks)");
        assert_eq!(got, ("ap-south-2".to_owned(), "vpc-456".to_owned()));
    }

    #[tokio::test]
    async fn off_ec2_asks_for_region_and_vpc() {
        let started = std::time::Instant::now();
        let url = format!("http://127.0.0.1:{}", free_port());
        let err = detect_with(&imds_client(&url)).await.expect_err("no IMDS");
        eprintln!("off EC2: {err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("pass -r/--region and -v/--vpc"), "{err}");
        assert!(!err.is_transient());
    }
}
