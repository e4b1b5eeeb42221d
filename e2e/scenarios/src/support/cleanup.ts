// Undo steps (unmount, detach a loop device, stop a daemon, delete a volume), run newest first. Every
// step runs even when an earlier one fails; the failures are reported together at the end.

export class Cleanup {
  private readonly steps: { what: string; fn: () => Promise<unknown> }[] = [];

  /** Register an undo step; returns a function that runs it now (once) and forgets it. */
  defer(what: string, fn: () => Promise<unknown>): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    return async () => {
      const i = this.steps.indexOf(step);
      if (i < 0) return;
      this.steps.splice(i, 1);
      await fn();
    };
  }

  async runAll(): Promise<void> {
    const failed: string[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (e) {
        failed.push(`${step.what}: ${(e as Error).message}`);
      }
    }
    if (failed.length > 0) throw new Error(`cleanup failed:\n${failed.join('\n')}`);
  }
}
