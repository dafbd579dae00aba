//! bench/dag: a wide DAG to time the engine's per-job cost.

mod dag;

fn main() {
    sparkwing::main(vec![
        dag::pipeline(),
        // sparkwing:pipelines (`sparkwing pipeline new` adds entries above this line)
    ]);
}
