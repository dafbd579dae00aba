use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Job {
    id: String,
    needs: Vec<String>,
    retries: u32,
}

fn main() {
    let job = Job { id: "build".into(), needs: vec!["lint".into()], retries: 1 };
    let text = serde_json::to_string(&job).unwrap();
    let back: Job = serde_json::from_str(&text).unwrap();
    assert_eq!(job, back);
    println!("{text}");
}
