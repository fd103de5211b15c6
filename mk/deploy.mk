# Deployment checks (included by the Makefile): `make check-deploy`.
#   deploy-tools   install kubectl, promtool, hadolint, shellcheck, kubernetes-validate, check-jsonschema
#   check-deploy   lint the Dockerfile and scripts, validate docker-compose.yml, the Prometheus config,
#                  every PromQL query and the rendered Kubernetes overlays (see scripts/check_deploy.py)
# No Docker engine or cluster is needed; everything runs offline once the tools are installed.
DEPLOY_TOOLS ?= build/deploy-tools
# Kubernetes versions whose API schemas the rendered manifests must satisfy.
K8S_VERSIONS ?= 1.30.0,1.34.0

.PHONY: deploy-tools check-deploy

deploy-tools: install
	PY=$(PY) DEPLOY_TOOLS=$(DEPLOY_TOOLS) scripts/install-deploy-tools.sh

check-deploy: deploy-tools
	$(PY) scripts/check_deploy.py --tools $(DEPLOY_TOOLS)/bin --out build/deploy-check --k8s-versions $(K8S_VERSIONS)

# Not part of `make test` (downloads PyTorch into a fresh virtualenv, a few minutes): the
# Dockerfile's install step and the files it ships, rehearsed without a Docker engine.
.PHONY: rehearse-image
rehearse-image:
	deploy/docker/rehearse-build.sh
