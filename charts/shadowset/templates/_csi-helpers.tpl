{{/* Labels of the CSI driver's objects: the chart's, with their own component (csi-controller, csi-node, csi). */}}
{{- define "shadowset.csiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "shadowset.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shadowset.csiLabels" -}}
helm.sh/chart: {{ include "shadowset.chart" .root }}
{{ include "shadowset.csiSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shadowset
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}
