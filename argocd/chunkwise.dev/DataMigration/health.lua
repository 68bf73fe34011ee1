-- Argo CD health of a chunkwise DataMigration, from its conditions (Lua 5.1, as Argo's
-- gopher-lua). Healthy: every row processed. Suspended: spec.suspend. Degraded: halted,
-- failed, stalled, or its pod cannot start. Progressing: anything else.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status or {}
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not acted on the latest spec yet"
  return hs
end

local succeeded = condition("Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = said(succeeded)
  return hs
end
local halted = condition("Halted")
if halted ~= nil and halted.status == "True" then
  hs.status = "Degraded"
  hs.message = "Halted: " .. said(halted)
  return hs
end
if succeeded ~= nil and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = "Failed: " .. said(succeeded)
  return hs
end
local suspended = condition("Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = said(suspended)
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = "Stalled: " .. said(stalled)
  return hs
end
local progressing = condition("Progressing")
if progressing ~= nil and progressing.status == "False" then
  -- its pod cannot start (image pull, refused by admission): waiting will not fix it
  hs.status = "Degraded"
  hs.message = said(progressing)
  return hs
end

hs.status = "Progressing"
local progress = status.progress or {}
if progress.percentText ~= nil then
  hs.message = (status.phase or "Pending") .. ": " .. progress.percentText .. " done"
else
  hs.message = (status.phase or "Pending") .. ": waiting for the worker's first checkpoint"
end
return hs
