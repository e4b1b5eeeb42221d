/** Condition types and their stable CamelCase reasons. */
export const ConditionType = { Ready: 'Ready', Degraded: 'Degraded', Resyncing: 'Resyncing' } as const;

export const Reason = {
  // Ready
  EngineRunning: 'EngineRunning',
  EnginePending: 'EnginePending',
  InvalidSpec: 'InvalidSpec',
  ClaimNotFound: 'ClaimNotFound',
  ClaimNotBlock: 'ClaimNotBlock',
  ClaimNotBound: 'ClaimNotBound',
  ClaimInOtherSet: 'ClaimInOtherSet',
  ForeignData: 'ForeignData',
  ImpossibleChange: 'ImpossibleChange',
  DetachRefused: 'DetachRefused',
  EngineUnreachable: 'EngineUnreachable',
  /** A freeze/thaw hook names a pod that is not a declared consumer of the set. */
  HookRefused: 'HookRefused',
  /** The engine does not accept the operator's token: its Secret was not derived for this set. */
  EngineUnauthorized: 'EngineUnauthorized',
  /** minicopyPolicy Required and no usable write bitmap: the member is not returned by a full copy. */
  BitmapRequired: 'BitmapRequired',
  /** The engine refused to start: the set's newest record is on a member it cannot open (ENG_STALE_RECORD). */
  NewestMemberMissing: 'NewestMemberMissing',
  // Degraded
  AllMembersInSync: 'AllMembersInSync',
  MembersNotInSync: 'MembersNotInSync',
  /** Every active member is a full member, some being merged (identical once the merge completes). */
  MembersMerging: 'MembersMerging',
  // Resyncing
  FullCopy: 'FullCopy',
  Merge: 'Merge',
  Minicopy: 'Minicopy',
  Steady: 'Steady',
} as const;

/** Event reasons (stable). */
export const EventReason = {
  MemberAdded: 'MemberAdded',
  MemberRemoved: 'MemberRemoved',
  MemberDetached: 'MemberDetached',
  MemberReturned: 'MemberReturned',
  MemberFaulted: 'MemberFaulted',
  CopyStarted: 'CopyStarted',
  CopyCompleted: 'CopyCompleted',
  MinicopyStarted: 'MinicopyStarted',
  MinicopyCompleted: 'MinicopyCompleted',
  MergeStarted: 'MergeStarted',
  MergeCompleted: 'MergeCompleted',
  BitmapCreated: 'BitmapCreated',
  BitmapDeleted: 'BitmapDeleted',
  EngineCreated: 'EngineCreated',
  EngineRestarted: 'EngineRestarted',
  /** The engine followed its consumer to another node (a VolumeAttachment). */
  EngineMoved: 'EngineMoved',
  /** Live VolumeAttachments of the set on different nodes: the older is followed. */
  AttachmentConflict: 'AttachmentConflict',
  /** Two or more members' claims are bound to one node: that node's loss takes all their copies. */
  MembersShareNode: 'MembersShareNode',
  HookRefused: 'HookRefused',
  Dissolved: 'Dissolved',
  Refused: 'Refused',
  /** The virtual unit grew to spec.size (message: from → to). */
  Resized: 'Resized',
  /** spec.size is not reached yet: the message names the members still too small (or what runs). */
  ResizePending: 'ResizePending',
} as const;
