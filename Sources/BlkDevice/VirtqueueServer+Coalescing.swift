import Reactor

/// Interrupt coalescing on the queue's reactor (`InterruptCoalescing`;
/// SPDK lib/vhost/vhost.c, `vhost_session_vq_used_signal`): a signal the
/// current delay holds back is pending, covering every used element since
/// the last signal, until a publish after its time or the queue's timer
/// sends it. Stopping the queue or turning coalescing off sends it at once,
/// so no interrupt is lost.
extension VirtqueueServer {
    /// Applies `settings` (vhost_controller_set_coalescing, or the
    /// controller's settings when the queue starts). Reactor thread.
    package func setCoalescing(_ settings: CoalescingSettings) {
        reactor.preconditionOnReactor()
        coalescing.update(settings)
        if settings.isEnabled && signalTimer == nil && !stopping {
            do {
                // The timer holds the queue until `finishStopIfIdle` closes it.
                signalTimer = try ReactorTimer(reactor: reactor) { [self] in signalTimerFired() }
            } catch {
                logger.warning("cannot create the interrupt coalescing timer (\(error)): interrupts are not delayed")
                coalescing.update(.off)
            }
        }
        if !coalescing.isEnabled { sendPendingSignal() }
    }

    /// The coalescing settings the queue uses now (reactor thread).
    package var coalescingSettings: CoalescingSettings { coalescing.settings }

    /// Whether to hold back the signal for `published` new used elements;
    /// if so it becomes pending from `from`, and the timer is armed for its
    /// time. Only a signal the driver asks for (EVENT_IDX, NO_INTERRUPT) is
    /// held back: one it does not want costs no timer.
    func delaySignal(published: UInt16, from: UInt16) -> Bool {
        let now = Reactor.now()
        guard let at = coalescing.completed(Int(published), now: now), let timer = signalTimer,
              ring.wantsNotify(oldUsedIdx: from) else { return false }
        if pendingSignalFrom == nil { stats.countDelayedInterrupt() }  // one per interrupt held back
        pendingSignalFrom = from
        if !timer.isArmed { timer.arm(afterNanoseconds: at &- now) }
        return true
    }

    /// The timer expired: send the pending signal, or wait on if a signal
    /// sent meanwhile moved the next allowed time.
    func signalTimerFired() {
        guard pendingSignalFrom != nil else { return }
        if ring.usedIdx != lastCheckedUsed { publishAndNotify() }
        guard let from = pendingSignalFrom else { return }
        let now = Reactor.now()
        if now < coalescing.notBefore, let timer = signalTimer {
            timer.arm(afterNanoseconds: coalescing.notBefore &- now)
            return
        }
        signalGuest(from: from)
    }

    /// Sends a pending signal now.
    func sendPendingSignal() {
        guard let from = pendingSignalFrom else { return }
        signalGuest(from: from)
    }

    /// The queue stopped: a pending signal goes now, the timer closes.
    func closeCoalescing() {
        sendPendingSignal()
        signalTimer?.close()
        signalTimer = nil
    }
}
