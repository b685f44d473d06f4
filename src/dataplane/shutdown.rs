//! A worker-local shutdown signal: idle connections and accept loops wait on it so SIGTERM can
//! close them at once, while busy connections finish their request first.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Fired once; every pending [`Shutdown::wait`] future then completes.
#[derive(Default)]
pub struct Shutdown {
    fired: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Shutdown {
    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        let slots = std::mem::take(&mut self.waiters.borrow_mut().slots);
        for w in slots.into_iter().flatten() {
            w.wake();
        }
    }

    /// Completes when the signal fires. Dropping it unregisters its waker, so the list stays as
    /// small as the number of connections currently waiting.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            shutdown: self,
            slot: None,
        }
    }
}

pub struct Wait<'a> {
    shutdown: &'a Shutdown,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.fired.get() {
            return Poll::Ready(());
        }
        let mut w = self.shutdown.waiters.borrow_mut();
        match self.slot {
            Some(i) if i < w.slots.len() => w.slots[i] = Some(cx.waker().clone()),
            _ => {
                let waker = Some(cx.waker().clone());
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = waker;
                        i
                    }
                    None => {
                        w.slots.push(waker);
                        w.slots.len() - 1
                    }
                };
                drop(w);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if self.shutdown.fired.get() {
                return;
            }
            let mut w = self.shutdown.waiters.borrow_mut();
            if i < w.slots.len() {
                w.slots[i] = None;
                w.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_are_woken_once_fired_and_slots_are_reused() {
        let s = Shutdown::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut a = Box::pin(s.wait());
            assert!(a.as_mut().poll(&mut cx).is_pending());
        }
        let mut b = Box::pin(s.wait());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            s.waiters.borrow().slots.len(),
            1,
            "dropped waiter's slot is reused"
        );
        s.fire();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(b.as_mut().poll(&mut cx).is_ready());
    }
}
