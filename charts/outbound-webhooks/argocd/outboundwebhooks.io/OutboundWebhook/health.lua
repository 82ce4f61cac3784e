-- Argo CD health check for outboundwebhooks.io/OutboundWebhook.
-- Reads only what the controller writes: status.observedGeneration, the
-- Ready summary condition and the Delivering condition (Kubernetes API
-- conventions).
local hs = {}

local function condition(wanted)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to reconcile the webhook"
  return hs
end

-- A spec change the controller has not reconciled yet: whatever the
-- conditions say, they describe an older generation.
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation) ..
    " (observed " .. tostring(obj.status.observedGeneration) .. ")"
  return hs
end

local ready = condition("Ready")

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation) ..
    " (Ready is for " .. tostring(ready.observedGeneration) .. ")"
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason or ""
end

if ready.status == "True" then
  -- Failing but still active: it receives events and retries, so it stays
  -- Healthy, and the message shows the failures before the hook turns off.
  local delivering = condition("Delivering")
  if delivering ~= nil and delivering.status == "False" and delivering.message ~= nil and delivering.message ~= "" then
    message = delivering.message
  end
  hs.status = "Healthy"
  hs.message = message
  return hs
end

if ready.status == "False" then
  if ready.reason == "DisabledBySpec" then
    hs.status = "Suspended"
  else
    -- AutoDisabled, Revoked, NotAccepted, SecretNotReady, and any reason a
    -- newer controller may add: the hook is not delivering.
    hs.status = "Degraded"
  end
  hs.message = message
  return hs
end

-- Ready=Unknown: the controller has not decided yet.
hs.status = "Progressing"
hs.message = message
return hs
