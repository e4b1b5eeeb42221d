{{/* Chart name, or nameOverride. */}}
{{- define "shadowset.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: fullnameOverride, else release name (plus the chart name unless the
release name already holds it). Kept to 52 characters so suffixed names stay within 63. */}}
{{- define "shadowset.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shadowset.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods; never change them on upgrade (Deployment selectors are immutable). */}}
{{- define "shadowset.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shadowset.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The selector labels as key=value,key=value (the operator's --operator-pod-labels). */}}
{{- define "shadowset.selectorLabelList" -}}
{{- $labels := include "shadowset.selectorLabels" . | fromYaml -}}
{{- $pairs := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $labels $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "shadowset.labels" -}}
helm.sh/chart: {{ include "shadowset.chart" . }}
{{ include "shadowset.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shadowset
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shadowset.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shadowset.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shadowset.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The engine image: engine.image.*, falling back to the operator's image (one image holds both programs). */}}
{{- define "shadowset.engineImage" -}}
{{- $repo := default .Values.image.repository .Values.engine.image.repository -}}
{{- $tag := .Values.engine.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Rules on namespaced resources: a ClusterRole's when every namespace is watched, else a Role's in
watchNamespace. Each verb is one the operator uses; see README.md (RBAC). */}}
{{- define "shadowset.namespacedRules" -}}
- apiGroups: ["shadowset.dev"]
  resources: ["shadowsets", "writebitmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["shadowset.dev"]
  resources: ["shadowsets/status", "writebitmaps/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["shadowset.dev"]
  resources: ["shadowsets/finalizers", "writebitmaps/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Rules on cluster-scoped resources: read-only, where a member's volume lives and which node can reach it; and
create-only reviews, with which the operator asks the API server who sent a /metrics request and whether that
user may get /metrics (the reviews are answers, not stored objects: nothing can be read or changed with them). */}}
{{- define "shadowset.clusterRules" -}}
- apiGroups: [""]
  resources: ["persistentvolumes", "nodes"]
  verbs: ["get", "list", "watch"]
# Where a set's consumer is: the CSI driver's VolumeAttachments (read only; the attacher owns them).
- apiGroups: ["storage.k8s.io"]
  resources: ["volumeattachments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end -}}
