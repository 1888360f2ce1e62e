//! Where a synced group's answers are sent from.
//!
//! Completing an appender's reply from a committer thread wakes its task from outside the
//! runtime: each wake takes the runtime's inject queue lock and may write to its eventfd,
//! ~0.5 µs per answer on the 2-vCPU VMs this is measured on, and the last of a 64-request
//! group's appenders hears its answer only after all the others' wakes. So where the engine
//! was opened on a multi-threaded tokio runtime, a task of that runtime sends the answers:
//! the committer hands it a whole group with one wake, and the task's wakes of the
//! appenders go to its worker's local queue. Elsewhere (no runtime, or a current-thread
//! runtime, which runs tasks only while someone blocks on it) the committer answers itself.
//!
//! An answer carries its results unbuilt ([`annals_core::write::ResultsFrom`]): the appender
//! builds what it returns, on its own thread, so that the leader allocates nothing for it.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;

use crate::writer::Answer;

/// Sends groups' answers, in the order it is given them.
pub(crate) struct Answerer {
    task: Option<mpsc::UnboundedSender<Vec<Answer>>>,
}

impl Answerer {
    /// Starts the answering task on the current runtime, if it is a multi-threaded one.
    pub(crate) fn start() -> Self {
        let handle = Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        let task = handle.map(|handle| {
            let (tx, rx) = mpsc::unbounded_channel::<Vec<Answer>>();
            handle.spawn(async move {
                let mut queue = Queue(rx);
                while let Some(answers) = queue.0.recv().await {
                    send(answers);
                }
            });
            tx
        });
        Self { task }
    }

    /// Answers a group's requests: through the task, or here if it is gone (its runtime
    /// shut down) or was never started.
    pub(crate) fn answer(&mut self, answers: Vec<Answer>) {
        let Some(task) = &self.task else {
            return send(answers);
        };
        if let Err(mpsc::error::SendError(answers)) = task.send(answers) {
            self.task = None;
            send(answers);
        }
    }
}

/// The task's queue. If the runtime drops the task (shutting down), the groups still
/// queued are answered as it goes, and later ones by the committer.
struct Queue(mpsc::UnboundedReceiver<Vec<Answer>>);

impl Drop for Queue {
    fn drop(&mut self) {
        self.0.close();
        while let Ok(answers) = self.0.try_recv() {
            send(answers);
        }
    }
}

fn send(answers: Vec<Answer>) {
    for (reply, result) in answers {
        // An appender that stopped waiting needs no answer.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use annals_core::write::ResultsFrom;
    use annals_core::{AppendError, AppendResult, CurrentRevision};
    use tokio::sync::oneshot;

    use super::*;

    type Response = oneshot::Receiver<Result<ResultsFrom, AppendError>>;

    /// `n` answers, the i-th reporting revision i.
    fn group(n: u64) -> (Vec<Answer>, Vec<Response>) {
        (0..n)
            .map(|i| {
                let (reply, response) = oneshot::channel();
                let result = AppendResult {
                    current_revision: CurrentRevision::Current(i),
                    positions: None,
                };
                ((reply, Ok(ResultsFrom::ready(vec![result]))), response)
            })
            .unzip()
    }

    fn revision(response: Response) -> CurrentRevision {
        let results = response
            .blocking_recv()
            .expect("an answer")
            .expect("a success")
            .into_results();
        results[0].current_revision
    }

    /// An answerer started inside `runtime`, as `Engine::open` called on it would start one.
    fn started_on(runtime: &tokio::runtime::Runtime) -> Answerer {
        let _entered = runtime.enter();
        Answerer::start()
    }

    #[test]
    fn a_multi_threaded_runtime_answers_through_its_task_in_order() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let mut answerer = started_on(&runtime);
        assert!(answerer.task.is_some());
        let (answers, responses) = group(64);
        answerer.answer(answers);
        let heard: Vec<_> = responses.into_iter().map(revision).collect();
        let sent: Vec<_> = (0..64).map(CurrentRevision::Current).collect();
        assert_eq!(heard, sent);
        // Once its runtime is gone, the committer answers itself.
        drop(runtime);
        let (answers, responses) = group(3);
        answerer.answer(answers);
        assert!(answerer.task.is_none());
        assert_eq!(
            revision(responses.into_iter().nth(2).unwrap()),
            CurrentRevision::Current(2)
        );
    }

    #[test]
    fn groups_still_queued_when_the_task_is_dropped_are_answered() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (answers, responses) = group(5);
        tx.send(answers).unwrap();
        drop(Queue(rx));
        assert!(
            tx.send(Vec::new()).is_err(),
            "the queue takes no more groups"
        );
        let heard: Vec<_> = responses.into_iter().map(revision).collect();
        assert_eq!(
            heard,
            (0..5).map(CurrentRevision::Current).collect::<Vec<_>>()
        );
    }

    #[test]
    fn without_a_runtime_that_runs_on_its_own_the_committer_answers() {
        let mut outside = Answerer::start();
        assert!(outside.task.is_none());
        let current_thread = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut inside = started_on(&current_thread);
        assert!(inside.task.is_none());
        for answerer in [&mut outside, &mut inside] {
            let (answers, responses) = group(2);
            answerer.answer(answers);
            assert_eq!(
                revision(responses.into_iter().nth(1).unwrap()),
                CurrentRevision::Current(1)
            );
        }
    }
}
