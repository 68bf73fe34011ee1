{{/* The DataMigration's name, as `manage.py chunkwise_manifest` derives it: app-migration
     in lower case with "-" for "_", plus "-opN" for a migration with several batched
     operations (give `operation` only then); at most 50 characters. */}}
{{- define "shop.dataMigrationName" -}}
{{- $name := printf "%s-%s" .app .name -}}
{{- if hasKey . "operation" }}{{- $name = printf "%s-op%v" $name .operation -}}{{- end -}}
{{- $name | lower | replace "_" "-" | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "shop.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The recommended labels (app.kubernetes.io/*, helm.sh/chart) of every resource. */}}
{{- define "shop.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
